"""``--analytics_sink`` without a server: every bad URI is one clear line (exit 2), the password is never
taken from the URI nor shown, an unreachable database stops the run before anything is written, and a
pane's rows become the part rows the database stores."""

from __future__ import annotations

import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from beam_rtbf.analytics.aggregate import ROW_COLUMNS, WindowedAggregates, file_rows
from beam_rtbf.analytics.postgres import pane_parts
from beam_rtbf.cli import main
from beam_rtbf.purge.analytics_table import AnalyticsTableResult, AnalyticsTableTask
from beam_rtbf.purge.receipts import receipt_status
from beam_rtbf.sinks.postgres import PostgresTarget, parse_sink
from beam_rtbf.testing.redis_server import free_port
from tests.helpers.composites import session_rows
from tests.helpers.data import T0


def test_a_sink_uri_splits_into_libpq_conninfo_and_table():
    assert parse_sink("postgresql://rtbf@db:5433/an?table=daily&sslmode=require") == PostgresTarget(
        "postgresql://rtbf@db:5433/an?table=daily&sslmode=require",
        "postgresql://rtbf@db:5433/an?sslmode=require",
        None,
        "daily",
    )
    target = parse_sink("postgres:///an?service=rtbf&table=reporting.rtbf")
    assert (target.conninfo, target.schema, target.table, target.label) == (
        "postgres:///an?service=rtbf",
        "reporting",
        "rtbf",
        "reporting.rtbf",
    )
    assert parse_sink("postgresql://h/db").table == "rtbf_analytics"  # the default table


@pytest.mark.parametrize(
    "uri, message",
    [
        ("postgresql://rtbf:hunter2@db/an", "a password in the URI is refused"),
        ("postgresql://db/an?password=hunter2", "a password parameter is refused"),
        ("postgresql://db/an?tabel=x", "unknown parameter 'tabel'"),
        ("postgresql://db/an?table=x&table=y", "a parameter is given twice"),
        ("postgresql://db/an?table=1x", "must be NAME or SCHEMA.NAME"),
        ("postgresql://db/an?table=a;drop", "must be NAME or SCHEMA.NAME"),
        ("postgresql://db/an?table=a.b.c", "must be NAME or SCHEMA.NAME"),
        ("postgresql://db/an?table=" + "x" * 49, "at most 48 characters"),
        ("mysql://db/an", "expected postgresql://"),
        ("postgresql://db/an#x", "a #fragment means nothing here"),
    ],
)
def test_a_bad_sink_uri_is_one_clear_error_and_never_echoes_a_password(tmp_path, registry_url, capsys, uri, message):
    code = main(["run", f"--output={tmp_path}", f"--registry={registry_url}", f"--analytics_sink={uri}"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert "hunter2" not in err
    assert not (tmp_path / "summary.json").exists()
    # purge checks the same option the same way, before planning anything
    assert main(["purge", f"--output={tmp_path}", f"--registry={registry_url}", f"--analytics_sink={uri}"]) == 2
    assert message in capsys.readouterr().err


def test_an_unreachable_database_stops_the_run_before_anything_is_written(tmp_path, registry_url, capsys):
    sink = f"postgresql://rtbf@127.0.0.1:{free_port()}/an?connect_timeout=2"
    code = main(["run", f"--output={tmp_path / 'out'}", f"--registry={registry_url}", f"--analytics_sink={sink}"])
    err = capsys.readouterr().err
    assert code == 2 and f"analytics sink {sink} unavailable" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "_runs").exists() and not (tmp_path / "out" / "summary.json").exists()


def test_a_pane_becomes_part_rows_with_exact_sums_and_the_files_keep_their_columns():
    batch = session_rows([("a", T0 + 1_000), ("b", T0 + 2_000), ("a", T0 + 3_000)])
    secs = batch.schema.get_field_index("secs_elapsed")
    import pyarrow as pa

    batch = batch.set_column(secs, batch.schema.field(secs), pa.array([1.0, None, 6.5], pa.float64()))
    p = TestPipeline()
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    panes = p | beam.Create([batch]) | WindowedAggregates(window_s=10, streaming=False)
    assert_that(
        panes | "Parts" >> beam.Map(lambda t: pane_parts(t, "r1", 2)),
        equal_to(
            [
                [
                    (
                        "2026-01-01T00:00:00.000Z",
                        "2026-01-01T00:00:10.000Z",
                        "view",
                        "iPhone",
                        "r1",
                        2,
                        3,
                        2,
                        7.5,
                        2,  # sessions with secs_elapsed: the mean is 7.5 / 2, not 7.5 / 3
                    )
                ]
            ]
        ),
        label="PartRows",
    )
    assert_that(
        panes | "Columns" >> beam.Map(lambda t: tuple(file_rows(t).column_names)),
        equal_to([ROW_COLUMNS]),
        label="FileColumns",
    )
    p.run()


def _table_result(status: str, verified: bool) -> AnalyticsTableResult:
    task = AnalyticsTableTask("postgresql://h/db", ((0, 60_000),), ("r1",))
    return AnalyticsTableResult(task, status, 3, 2, 1, 1, 1, verified, "2026-01-01T00:00:00.000Z")


def test_a_receipt_is_verified_only_when_the_table_was_recomputed_and_re_read():
    passed = {"passed": True}
    assert receipt_status([], [], (), passed, [_table_result("recomputed", True)]) == "verified"
    assert receipt_status([], [], (), passed, [_table_result("error", False)]) == "incomplete"
    assert receipt_status([], [], (), passed, [_table_result("blocked", False)]) == "blocked"
