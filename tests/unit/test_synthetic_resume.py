"""Live synthetic sources resume from their checkpoint with the very next record, and their
sessions are known in advance (what the Flink resume test compares the archive with)."""

from __future__ import annotations

import json
import time

from beam_rtbf.sources.synthetic import (
    SyntheticConfig,
    SyntheticRequestPoller,
    SyntheticSessionPoller,
    expected_live_sessions,
    live_requests,
)

CFG = SyntheticConfig(users=300, rate=4000, duration_s=0.5, seed=3, batch_rows=97)


def _drain(poller, into: dict[str, str], stop_after: int | None = None) -> bool:
    """Poll into ``into`` (event_id -> user_id) until the source ends (True) or ``stop_after`` rows (False)."""
    while True:
        result = poller.poll()
        for batch, _ in result.elements:
            for event_id, user in zip(batch.column("event_id").to_pylist(), batch.column("user_id").to_pylist()):
                assert event_id not in into, f"{event_id} twice"
                into[event_id] = user
        if result.done:
            return True
        if stop_after is not None and len(into) >= stop_after:
            return False
        time.sleep(0.005)


def test_a_live_generator_resumed_from_its_checkpoint_makes_the_expected_sessions_once():
    expected = expected_live_sessions(CFG, shards=2)
    assert len(expected) == 2000 and len(set(expected.values())) > 50
    got: dict[str, str] = {}
    for shard in (0, 1):
        first = SyntheticSessionPoller(CFG, shard, 2)
        first.open()
        assert not _drain(first, got, stop_after=len(got) + 300)
        resumed = SyntheticSessionPoller(CFG, shard, 2)
        resumed.restore(first.checkpoint())
        resumed.open()
        assert _drain(resumed, got)
    assert got == expected  # every id once, each with the user known in advance


def test_the_whole_stream_generator_has_ids_of_its_own():
    expected = expected_live_sessions(CFG)
    got: dict[str, str] = {}
    poller = SyntheticSessionPoller(CFG)
    poller.open()
    assert _drain(poller, got)
    assert got == expected and next(iter(got)).startswith("live3-")


def test_requests_resume_with_the_next_request_and_the_time_already_run():
    cfg = SyntheticConfig(users=300, request_rate=40, duration_s=0.5, active_users=30, seed=3)
    first = SyntheticRequestPoller(cfg)
    first.open()
    seen: list[int] = []
    while len(seen) < 8:
        seen += [raw.first_offset for raw, _ in first.poll().elements]
        time.sleep(0.01)
    state = first.checkpoint()
    assert state["emitted"] == len(seen) and 0 < state["elapsed_s"] <= 0.5
    resumed = SyntheticRequestPoller(cfg)
    resumed.restore(state)
    resumed.open()
    while True:
        result = resumed.poll()
        seen += [raw.first_offset for raw, _ in result.elements]
        if result.done:
            break
        time.sleep(0.01)
    assert seen == list(range(20))  # request k once each, in order: 40/s for 0.5 s


def test_the_requests_a_run_makes_are_known_in_advance():
    cfg = SyntheticConfig(users=300, request_rate=200, duration_s=0.1, active_users=30, seed=3)
    poller = SyntheticRequestPoller(cfg)
    poller.open()
    made: list[tuple[str, str]] = []
    while True:
        result = poller.poll()
        for raw, _ in result.elements:
            request = json.loads(raw.data)
            made.append((request["request_id"], request["subject_id"]))
        if result.done:
            break
        time.sleep(0.01)
    assert made == live_requests(cfg) and len(made) == 20


def test_a_poll_capped_by_batch_rows_leaves_a_backlog_with_older_event_times():
    """A job behind its stream polls late: it gets ``batch_rows`` sessions whose times cover what they
    are (n / rate seconds from where the stream stood), and the rest waits with older times, so the
    lag a soak measures from event times is the job's real lag."""
    cfg = SyntheticConfig(users=300, rate=1000, duration_s=10, seed=3, batch_rows=100)
    poller = SyntheticSessionPoller(cfg)
    poller.open()
    started_ms = time.time() * 1000
    time.sleep(0.5)  # 500 sessions due, 100 per poll
    ((batch, _),) = poller.poll().elements
    times = batch.column("event_time_ms").to_numpy()
    assert batch.num_rows == 100
    assert started_ms - 5 <= times.min() and times.max() <= started_ms + 100 + 5  # 100 sessions = 0.1 s at 1,000/s
    ((batch, _),) = poller.poll().elements  # the backlog: the next 0.1 s of the stream
    times = batch.column("event_time_ms").to_numpy()
    assert started_ms + 100 - 5 <= times.min() and times.max() <= started_ms + 200 + 5
