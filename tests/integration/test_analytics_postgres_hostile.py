"""Attacks on ``--analytics_sink``: a schema that is not there, tables dropped by someone between a run and
its recovery or purge, hostile table names. A real PostgreSQL server (loopback, stopped by PID)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from beam_rtbf.cli import main
from beam_rtbf.sinks import postgres as pg
from beam_rtbf.testing.postgres_server import PostgresServer
from tests.helpers.postgres_analytics import (
    ROOT,
    SECRET,
    run_flags,
    run_without_publishing,
    runs,
    sessions_file,
    view_rows,
)
from tests.helpers.purge_setup import aggregate_archive, analytics_rows, build, read_receipt

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TABLE_PREFIX = "h_"  # tables of their own on a server shared with nothing else


def _drop_all(pg_server: PostgresServer, table: str) -> None:
    with pg_server.connect() as conn:
        conn.execute(f'DROP VIEW IF EXISTS "{table}"')
        for suffix in ("_parts", "_runs", "_meta"):
            conn.execute(f'DROP TABLE IF EXISTS "{table}{suffix}"')


def test_a_schema_that_does_not_exist_is_one_line_and_leaves_no_run(pg_server, pg_sink, tmp_path):
    import os

    missing = pg_sink.replace("table=", "table=nosuch.")
    flags = run_flags(tmp_path, missing, sessions_file(tmp_path))
    env = {**os.environ, pg.PASSWORD_ENV: SECRET, "PYTHONPATH": ROOT}
    done = subprocess.run(
        [sys.executable, "-m", "beam_rtbf.cli", "run", *flags], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout
    assert done.stderr.count("\n") == 1 and 'schema "nosuch" does not exist' in done.stderr
    assert done.stderr == f'beam-rtbf run: analytics sink {missing}: schema "nosuch" does not exist\n'
    ledger = tmp_path / "out" / "_runs"
    assert not ledger.exists() or not list(ledger.glob("*.json"))  # a refused database leaves no run behind


def test_tables_dropped_under_a_dead_run_do_not_stop_its_recovery(pg_server, pg_sink, tmp_path):
    flags = run_flags(tmp_path, pg_sink, sessions_file(tmp_path))
    dead, _ = run_without_publishing(flags)
    _drop_all(pg_server, pg.parse_sink(pg_sink).table)  # someone dropped the analytics tables meanwhile
    assert main(["run", *flags]) == 0  # recovery discards the dead run (tables created again), the re-run writes
    out = tmp_path / "out"
    assert view_rows(pg_server, pg_sink) == analytics_rows(out) == aggregate_archive(out)
    assert runs(pg_server, pg_sink)[dead.record["run_id"]] == "abandoned"


def test_purge_after_the_tables_were_dropped_verifies_what_is_there(pg_server, pg_sink, tmp_path):
    setup = build(tmp_path / "a", f"embedded://{tmp_path / 'reg.sqlite'}", extra=[f"--analytics_sink={pg_sink}"])
    _drop_all(pg_server, pg.parse_sink(pg_sink).table)
    assert setup.purge() == 0
    receipt = read_receipt(setup.out, "req-a")
    (location,) = [loc for loc in receipt["locations"] if loc["kind"] == "analytics_table"]
    assert location["status"] == "recomputed" and location["verified"] is True
    assert location["sessions_before"] == 0  # nothing of the subject was left there
    assert receipt["status"] == "verified"


def test_the_database_lost_mid_run_fails_the_run_claims_nothing_and_the_rerun_counts_once(
    tmp_path, monkeypatch, capsys
):
    import json

    db = PostgresServer(password=SECRET)  # a server of its own: this test stops it mid-run
    db.start()
    try:
        monkeypatch.setenv(pg.PASSWORD_ENV, SECRET)
        uri = db.sink_uri()
        flags = [*run_flags(tmp_path, uri, sessions_file(tmp_path)), "--runner=FnApiRunner"]
        real = pg.upsert_parts

        def lost(conn, target, rows):
            db.stop()  # the database goes away as the first bundle writes
            return real(conn, target, rows)

        monkeypatch.setattr(pg, "upsert_parts", lost)
        code = main(["run", *flags])
        err = capsys.readouterr().err
        assert code == 2 and SECRET not in err
        assert err.startswith(f"beam-rtbf run: analytics sink {uri} lost during a write: ") and err.count("\n") == 1
        out = tmp_path / "out"
        summary = out / "summary.json"
        assert not summary.exists() or not json.loads(summary.read_text()).get("analytics_db_rows")
        monkeypatch.setattr(pg, "upsert_parts", real)
        db.start()
        assert view_rows(db, uri) == {}
        assert main(["run", *flags]) == 0
        assert view_rows(db, uri) == analytics_rows(out) == aggregate_archive(out)
    finally:
        db.close()


def test_a_purge_keeps_the_staged_parts_of_a_run_in_flight_which_then_count_once(pg_server, pg_sink):
    """A purge recomputing windows that a running (staged) run also writes deleted that run's parts: once
    the run published, the table lacked its sessions while its files had them."""
    target = pg.parse_sink(pg_sink)
    window = ("2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z")
    with pg.connection(target) as conn:
        pg.ensure_schema(conn, target)
        pg.register_run(conn, target, "old", staged=False)
        pg.upsert_parts(conn, target, [(*window, "view", "Mac", "old", 0, 5, 4, 50.0, 5)])
        pg.register_run(conn, target, "live", staged=True)  # a bounded run, not yet published
        pg.upsert_parts(conn, target, [(*window, "view", "Mac", "live", 0, 2, 2, 4.0, 2)])
        start_ms = 1_767_225_600_000
        before, rows, deleted = pg.replace_windows(
            conn, target, "purge-p1", [start_ms], [(*window, "view", "Mac", "purge-p1", 0, 3, 3, 30.0, 3)]
        )
        assert (before, rows, deleted) == (5, 1, 1)  # the old run's part, not the live run's
        assert pg.foreign_parts(conn, target, [start_ms], "purge-p1") == 0  # the staged part does not count
        assert [r[3] for r in pg.window_rows(conn, target, [start_ms])] == [3]
        pg.publish_run(conn, target, "live")
        assert [r[3:5] for r in pg.window_rows(conn, target, [start_ms])] == [(5, 5)]  # 3 recomputed + 2 live


def test_a_database_error_in_a_receipt_keeps_its_code_and_message_but_not_the_values_it_quotes(pg_server):
    """PostgreSQL's DETAIL lines quote row values ("Key (k)=(...) already exists"); a receipt outlives
    the data, so it keeps the error's SQLSTATE and primary message only."""
    import psycopg

    from beam_rtbf.purge.analytics_table import AnalyticsTableTask, _error

    with pg_server.connect() as conn:
        conn.execute("CREATE TEMP TABLE quoted (k text PRIMARY KEY)")
        conn.execute("INSERT INTO quoted VALUES ('alice@example.com')")
        with pytest.raises(psycopg.errors.UniqueViolation) as caught:
            conn.execute("INSERT INTO quoted VALUES ('alice@example.com')")
    assert "alice@example.com" in str(caught.value)  # the full text does quote it
    text = _error(AnalyticsTableTask("postgresql://127.0.0.1:1/db?table=t", (), ()), caught.value)
    assert text == (
        "postgresql://127.0.0.1:1/db?table=t: UniqueViolation [23505]: "
        'duplicate key value violates unique constraint "quoted_pkey"'
    )
