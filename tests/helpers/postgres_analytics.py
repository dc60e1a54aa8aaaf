"""The PostgreSQL analytics sink's test kit: a module's server and a table per test, what the table
shows (read back independently of the sink's code), and the flags of a run writing to it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineResult

from beam_rtbf.job import job_options
from beam_rtbf.pipeline import RunJob
from beam_rtbf.sinks import postgres as pg
from beam_rtbf.testing.postgres_server import PostgresServer
from tests.helpers.purge_setup import sample_sessions

ROOT = str(Path(__file__).resolve().parents[2])
SECRET = "pg-Secret-4711-do-not-log"


def table_of(uri: str) -> str:
    return pg.parse_sink(uri).table


def view_rows(server: PostgresServer, uri: str) -> dict[tuple[str, str, str], tuple[int, int, float]]:
    """The table's view as ``analytics_rows`` reads the files: (window_start, action, device) -> figures."""
    with server.connect() as conn:
        rows = conn.execute(
            f"SELECT window_start, action_type, device_type, sessions, distinct_users, avg_secs_elapsed "
            f"FROM {table_of(uri)}"
        ).fetchall()
    return {
        (start.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"), a, d): (s, u, round(avg, 6))
        for start, a, d, s, u, avg in rows
    }


def runs(server: PostgresServer, uri: str) -> dict[str, str]:
    with server.connect() as conn:
        return dict(conn.execute(f"SELECT run_id, state FROM {table_of(uri)}_runs").fetchall())


def parts(server: PostgresServer, uri: str, run_id: str | None = None) -> int:
    with server.connect() as conn:
        query = f"SELECT count(*) FROM {table_of(uri)}_parts" + (" WHERE run_id = %s" if run_id else "")
        return conn.execute(query, (run_id,) if run_id else ()).fetchone()[0]


def sessions_file(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    path = data / "sessions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in sample_sessions()))
    (data / "empty.jsonl").write_text("")
    return path


def run_flags(tmp_path: Path, sink: str, sessions: Path) -> list[str]:
    return [
        f"--sessions=file://{sessions}",
        f"--requests=file://{sessions.parent / 'empty.jsonl'}",
        f"--output={tmp_path / 'out'}",
        f"--registry=embedded://{tmp_path / 'registry.sqlite'}",
        f"--analytics_sink={sink}",
        "--dedupe=off",
    ]


def run_without_publishing(flags: list[str]) -> tuple[RunJob, PipelineResult]:
    """A bounded run whose pipeline finished and whose driver died before the ledger published (kill -9)."""
    job = RunJob(job_options(flags))
    assert job.prepare("FnApiRunner") is None
    pipeline = beam.Pipeline(runner=FnApiRunner(), options=job.options)
    job.build(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    return job, result
