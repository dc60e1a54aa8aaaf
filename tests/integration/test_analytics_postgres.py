"""``--analytics_sink postgresql://...`` against a real PostgreSQL server (``initdb`` in a temporary folder,
loopback, stopped by PID): exact rows after a run, no double counting after a retried bundle, a killed
run or a re-run, recomputed rows after a purge, and the password in no log and no file.

Every row the table shows is checked against an independent aggregation of the archive in plain
Python (``aggregate_archive``) and against the analytics files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

from beam_rtbf.analytics.aggregate import merge_partials, partial_aggregates, with_iso_windows
from beam_rtbf.analytics.postgres import _UpsertPanesFn
from beam_rtbf.cli import main
from beam_rtbf.options import locations
from beam_rtbf.sinks import postgres as pg
from beam_rtbf.sinks.ledger import RunLedger
from beam_rtbf.testing.postgres_server import PostgresServer
from tests.helpers.data import sessions as session_batch
from tests.helpers.postgres_analytics import (
    ROOT,
    SECRET,
    parts,
    run_flags,
    run_without_publishing,
    runs,
    sessions_file,
    table_of,
    view_rows,
)
from tests.helpers.purge_setup import (
    FORGOTTEN,
    HOUR,
    T0,
    aggregate_archive,
    analytics_rows,
    build,
    manifest,
    read_receipt,
    sample_sessions,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_run_writes_exactly_the_windows_of_the_files_and_a_rerun_counts_nothing_twice(pg_server, pg_sink, tmp_path):
    sessions = sessions_file(tmp_path)
    flags = run_flags(tmp_path, pg_sink, sessions)
    out = tmp_path / "out"
    assert main(["run", *flags]) == 0
    expected = aggregate_archive(out)
    assert len(expected) == 22 and sum(v[0] for v in expected.values()) == len(sample_sessions())
    assert view_rows(pg_server, pg_sink) == analytics_rows(out) == expected
    summary = json.loads((out / "summary.json").read_text())
    assert summary["analytics_db_rows"] == 22 and summary["analytics_sink"] == pg_sink
    (run_id,) = runs(pg_server, pg_sink)
    assert runs(pg_server, pg_sink) == {run_id: "committed"} and run_id == summary["run_id"]

    # The same input again: the ledger makes it a no-op, in the table too.
    assert main(["run", *flags]) == 0
    assert view_rows(pg_server, pg_sink) == expected and len(runs(pg_server, pg_sink)) == 1

    # --append: the same data added on purpose counts twice, as in the files (a part per run).
    assert main(["run", *flags, "--append"]) == 0
    doubled = {k: (2 * s, 2 * u, avg) for k, (s, u, avg) in expected.items()}
    assert view_rows(pg_server, pg_sink) == doubled
    assert sorted(runs(pg_server, pg_sink).values()) == ["committed", "committed"]


def _pane(batch_rows: list[tuple[str, int]], window_ms: int = 60_000) -> pa.Table:
    batch = session_batch(batch_rows)
    partials = [p for _, p in partial_aggregates(batch, window_ms, 1 << 62)]
    return with_iso_windows(merge_partials(partials), window_ms)


def _deliver(uri: str, run_id: str, pane: pa.Table, index: int) -> None:
    """One attempt of a bundle holding ``pane``, on a fresh DoFn instance (as a retry on another worker)."""
    fn = _UpsertPanesFn(uri, run_id)
    fn.setup()
    fn.start_bundle()
    timing = PaneInfoTiming.ON_TIME if index == 0 else PaneInfoTiming.LATE
    fn.process(pane, pane_info=PaneInfo(index == 0, False, timing, index, index))
    fn.finish_bundle()
    fn.teardown()


def test_a_retried_bundle_replaces_its_rows_and_a_late_pane_adds_its_own(pg_server, pg_sink):
    on_time = _pane([("a", T0 + 1_000), ("b", T0 + 2_000), ("a", T0 + 3_000)])
    late = _pane([("c", T0 + 4_000)])
    key = ("2026-01-01T00:00:00.000Z", "view", "iPhone")
    _deliver(pg_sink, "s-1", on_time, 0)
    _deliver(pg_sink, "s-1", on_time, 0)  # the runner retried the bundle after the write
    assert view_rows(pg_server, pg_sink) == {key: (3, 2, 10.0)}
    _deliver(pg_sink, "s-1", late, 1)  # a late pane: only its own sessions (discarding mode)
    _deliver(pg_sink, "s-1", late, 1)  # ... delivered twice
    assert view_rows(pg_server, pg_sink) == {key: (4, 3, 10.0)}
    assert parts(pg_server, pg_sink, "s-1") == 2


def test_a_run_killed_before_it_published_is_invisible_and_its_rerun_counts_once(pg_server, pg_sink, tmp_path):
    sessions = sessions_file(tmp_path)
    flags = run_flags(tmp_path, pg_sink, sessions)
    dead, _ = run_without_publishing(flags)
    dead_run = dead.record["run_id"]
    assert parts(pg_server, pg_sink, dead_run) == 22  # written, but staged:
    assert runs(pg_server, pg_sink) == {dead_run: "staged"} and view_rows(pg_server, pg_sink) == {}

    assert main(["run", *flags]) == 0  # recovery deletes the dead run's rows; the re-run writes its own
    out = tmp_path / "out"
    assert view_rows(pg_server, pg_sink) == analytics_rows(out) == aggregate_archive(out)
    assert parts(pg_server, pg_sink, dead_run) == 0 and runs(pg_server, pg_sink)[dead_run] == "abandoned"


def test_a_publish_the_database_interrupted_is_finished_by_the_next_run(tmp_path, monkeypatch):
    db = PostgresServer(password=SECRET)  # a server of its own: this test stops it
    db.start()
    try:
        monkeypatch.setenv(pg.PASSWORD_ENV, SECRET)
        uri = db.sink_uri()
        flags = run_flags(tmp_path, uri, sessions_file(tmp_path))
        job, result = run_without_publishing(flags)
        db.stop()
        with pytest.raises(pg.AnalyticsSinkUnavailable, match="analytics sink .* unavailable"):
            job.finish(result, 1.0, None)  # the ledger's publish: the files, then the table
        out = tmp_path / "out"
        ledger = RunLedger.for_locations(str(out), locations(job.opts))
        assert [r["state"] for r in ledger.runs()] == ["publishing"]
        db.start()
        assert view_rows(db, uri) == {}  # the files are published, the table's rows not yet
        assert main(["run", *flags]) == 0  # recovery finishes the publish; the input is then committed
        assert [r["state"] for r in ledger.runs()] == ["committed"]
        assert view_rows(db, uri) == analytics_rows(out) == aggregate_archive(out)
    finally:
        db.close()


def test_purge_recomputes_the_rows_that_counted_the_subjects_and_the_receipt_says_so(pg_server, pg_sink, tmp_path):
    setup = build(tmp_path / "a", f"embedded://{tmp_path / 'reg.sqlite'}", extra=[f"--analytics_sink={pg_sink}"])
    before = view_rows(pg_server, pg_sink)
    assert before == analytics_rows(setup.out) == aggregate_archive(setup.out)
    # The manifest names the table and the windows of its rows that counted the subject.
    tables = manifest(setup.out, "req-a")["locations"]["analytics_tables"]
    windows = manifest(setup.out, "req-a")["locations"]["analytics_windows"]
    assert tables == [{"uri": pg_sink, "table": table_of(pg_sink), "rows": tables[0]["rows"], "windows": windows}]

    assert setup.purge() == 0
    after = view_rows(pg_server, pg_sink)
    assert after == analytics_rows(setup.out) == aggregate_archive(setup.out)
    assert sum(v[0] for v in after.values()) == sum(setup.expected_after.values())

    receipt = read_receipt(setup.out, "req-a")
    (location,) = [loc for loc in receipt["locations"] if loc["kind"] == "analytics_table"]
    affected = set(location["windows"])
    all_windows = {w for rid in FORGOTTEN for w in _windows(setup.out, rid)}
    assert affected == all_windows  # every request's windows, replaced in one transaction
    assert location["sessions_before"] == sum(v[0] for k, v in before.items() if k[0] in affected)
    assert location["sessions_after"] == sum(v[0] for k, v in after.items() if k[0] in affected)
    assert location["sessions_before"] - location["sessions_after"] == sum(setup.subject_records.values()) == 29
    assert location["verified"] is True and location["status"] == "recomputed" and receipt["status"] == "verified"
    assert location["verification"].startswith("re-read after commit:")
    purge_runs = [r for r, state in runs(pg_server, pg_sink).items() if r.startswith("purge-") and state == "committed"]
    assert len(purge_runs) == 1


def _windows(out: Path, request_id: str) -> list[str]:
    return [w["start"] for w in manifest(out, request_id)["locations"]["analytics_windows"]]


def test_purge_with_the_database_down_keeps_the_requests_open_until_it_answers(tmp_path, monkeypatch, capsys):
    db = PostgresServer(password=SECRET)
    db.start()
    try:
        monkeypatch.setenv(pg.PASSWORD_ENV, SECRET)
        monkeypatch.setenv("RTBF_SUBJECT_HASH_KEY", "test-key")
        uri = db.sink_uri()
        setup = build(tmp_path / "a", f"embedded://{tmp_path / 'reg.sqlite'}", extra=[f"--analytics_sink={uri}"])
        db.stop()
        assert setup.purge() == 1
        receipt = read_receipt(setup.out, "req-b")
        (location,) = [loc for loc in receipt["locations"] if loc["kind"] == "analytics_table"]
        assert receipt["status"] == "incomplete" and location["status"] == "error"
        assert "unavailable" in location["verification"] and SECRET not in json.dumps(receipt)
        db.start()
        assert setup.purge() == 0
        assert read_receipt(setup.out, "req-b")["status"] == "verified"
        assert view_rows(db, uri) == analytics_rows(setup.out) == aggregate_archive(setup.out)
    finally:
        db.close()


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beam_rtbf.cli", "-v", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_the_password_reaches_no_log_and_no_file(pg_server, pg_sink, tmp_path):
    env = {**os.environ, pg.PASSWORD_ENV: SECRET, "RTBF_SUBJECT_HASH_KEY": "test-key", "PYTHONPATH": ROOT}
    sessions = sessions_file(tmp_path)
    requests = tmp_path / "data" / "requests.jsonl"
    requests.write_text(json.dumps({"request_id": "r1", "subject_id": "bob", "requested_at": T0 + 4 * HOUR}) + "\n")
    out = tmp_path / "out"
    common = [f"--output={out}", f"--registry=embedded://{tmp_path / 'reg.sqlite'}", f"--analytics_sink={pg_sink}"]
    logs = []
    for done in (
        _cli("run", *common, f"--sessions=file://{sessions}", f"--requests=file://{sessions.parent / 'empty.jsonl'}", env=env),
        _cli("run", *common, f"--sessions=file://{sessions.parent / 'empty.jsonl'}", f"--requests=file://{requests}", env=env),
        _cli("purge", *common, env=env),
    ):  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        logs.append(done.stdout + done.stderr)
    receipt = read_receipt(out, "r1")
    assert receipt["status"] == "verified" and "analytics_table" in {loc["kind"] for loc in receipt["locations"]}
    # Wrong password, and a password put in the URI: one line each, exit 2, and the secret never shown.
    wrong = _cli("run", *common, f"--sessions=file://{sessions}", "--append", env={**env, pg.PASSWORD_ENV: "nope-x"})
    assert wrong.returncode == 2 and "password authentication failed" in wrong.stderr
    with_password = pg_sink.replace("rtbf@", f"rtbf:{SECRET}@")
    in_uri = _cli("run", *common[:2], f"--analytics_sink={with_password}", env=env)
    assert in_uri.returncode == 2 and "a password in the URI is refused" in in_uri.stderr
    logs += [wrong.stdout + wrong.stderr, in_uri.stdout + in_uri.stderr]
    assert all(SECRET not in text for text in logs)
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in pg_server.log_text()


def test_the_schema_is_created_once_migrated_and_never_takes_over_a_foreign_table(pg_server, pg_sink):
    target = pg.parse_sink(pg_sink)
    with pg.connection(target) as conn:
        assert pg.ensure_schema(conn, target) == 0
        assert pg.ensure_schema(conn, target) == pg.SCHEMA_VERSION  # already there: nothing done
        conn.execute(f"UPDATE {target.table}_meta SET value = '99' WHERE key = 'schema_version'")
        with pytest.raises(ValueError, match="schema version 99, written by a newer beam-rtbf"):
            pg.ensure_schema(conn, target)
        conn.execute(f"CREATE TABLE {target.table}_x (a int)")
    foreign = pg.parse_sink(pg_sink.replace(f"table={target.table}", f"table={target.table}_x"))
    with pg.connection(foreign) as conn, pytest.raises(ValueError, match="was not created by beam-rtbf"):
        pg.ensure_schema(conn, foreign)
