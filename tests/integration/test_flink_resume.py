"""Stop a streaming job on Flink (flink-local) and resume it: no session lost, none archived twice.

The sessions come from seeded live generators whose every session (id and user) is known in
advance (``expected_live_sessions``), so the archive is compared with the exact expected set:
every session of a subject never forgotten is archived exactly once, and a session missing from
the archive belongs to a forgotten subject. Dedupe is off, so a read that started over or a
replay written twice would show as duplicates. Two ways to stop:

- ``savepoint``: Ctrl-C stops the job with a savepoint (Flink's REST API), the run resumes from it;
- ``cancel``: Ctrl-C cancels the job after a completed checkpoint (kept on cancellation); the
  resumed job replays everything after that checkpoint, which exactly-once outputs absorb.
"""

from __future__ import annotations

import os

import pytest

from beam_rtbf.records import parse_time_ms
from beam_rtbf.sources.synthetic import SyntheticConfig, expected_live_sessions, live_requests
from tests.helpers.data import analytics_rows, archive_rows, dead_letters, manifests
from tests.helpers.flink_runs import FlinkRun, archived_ids, checkpoint_flags, newest_checkpoint, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

USERS, SEED, RATE, DURATION_S = 500, 11, 300, 120
SESSIONS = f"synthetic://sessions?users={USERS}&rate={RATE}&duration_s={DURATION_S}&seed={SEED}&shards=2"
REQUESTS = f"synthetic://requests?users={USERS}&request_rate=0.1&duration_s={DURATION_S}&active_users=40&seed={SEED}"


def _flags(work, stop_with: str) -> list[str]:
    return [
        "--filter_strategy=state", f"--sessions={SESSIONS}", f"--requests={REQUESTS}", "--dedupe=off",
        "--window_s=1", "--archive_partition_s=60", f"--stop_with={stop_with}", *checkpoint_flags(work),
    ]  # fmt: skip


@pytest.mark.parametrize("stop_with", ["savepoint", "cancel"])
def test_stop_and_resume_archives_every_session_exactly_once(tmp_path, stop_with):
    expected = expected_live_sessions(SyntheticConfig(users=USERS, rate=RATE, duration_s=DURATION_S, seed=SEED), 2)
    requests = live_requests(
        SyntheticConfig(users=USERS, request_rate=0.1, duration_s=DURATION_S, active_users=40, seed=SEED)
    )
    forgotten = {subject for _, subject in requests}
    must_archive = {e for e, user in expected.items() if user not in forgotten}
    assert len(expected) == RATE * DURATION_S and len(must_archive) > 0.8 * len(expected)
    out = tmp_path / "out"

    first = FlinkRun(tmp_path, *_flags(tmp_path, stop_with)).start()
    try:
        wait_for(lambda: len(archived_ids(out)) >= 3000, 400, "3000 sessions archived", first)
        if stop_with == "cancel":  # a checkpoint completed after them: the cancel keeps it
            seen = newest_checkpoint(tmp_path)
            wait_for(lambda: newest_checkpoint(tmp_path) > seen, 120, "a checkpoint after them", first)
        stopped = first.stop()
    finally:
        first.kill()
    assert (stopped["stopped_with"], stopped["stopped_by"], stopped["conservation_ok"]) == (stop_with, "SIGINT", None)
    assert os.path.isfile(os.path.join(stopped["resume_from"], "_metadata"))
    before = archived_ids(out)
    assert set(before.values()) == {1} and len(before) < len(must_archive)

    second = FlinkRun(tmp_path, *_flags(tmp_path, stop_with), f"--savepoint_path={stopped['resume_from']}").start()
    try:
        wait_for(lambda: must_archive <= set(archived_ids(out)), 400, "every session archived", second)
        # The stream ended: the watermark passes every window, so the analytics cover the archive.
        wait_for(lambda: _analytics_sessions(out) >= len(archived_ids(out)), 180, "the last windows", second)
        resumed = second.stop()
    finally:
        second.kill()
    assert resumed["stopped_with"] == stop_with

    archived = archived_ids(out)
    assert set(archived.values()) == {1}, [e for e, n in archived.items() if n > 1][:10]  # none twice
    assert set(archived) <= set(expected)  # nothing made up, nothing started over under new ids
    missing = set(expected) - set(archived)
    assert {expected[e] for e in missing} <= forgotten  # only forgotten subjects' sessions are missing
    assert _analytics_sessions(out) == len(archived)  # each window counted each session once
    assert dead_letters(str(out)) == []

    written = manifests(str(out))
    assert sorted(written) == sorted(r for r, _ in requests)  # one manifest per request, none twice
    table = archive_rows(str(out))
    users, times = table.column("user_id").to_pylist(), table.column("event_time_ms").to_pylist()
    for manifest in written.values():
        effective, subject = parse_time_ms(manifest["effective_at"]), manifest["subject_ids"][0]
        assert [t for u, t in zip(users, times) if u == subject and t > effective] == []


def _analytics_sessions(out) -> int:
    return sum(row["sessions"] for row in analytics_rows(str(out)))
