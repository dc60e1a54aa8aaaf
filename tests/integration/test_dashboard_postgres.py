"""``beam-rtbf dashboard --analytics postgresql://``: the same rows and totals from the sink's table as from the files.

A real PostgreSQL (``beam_rtbf/testing/postgres_server.py``) holds the table the analytics
sink writes, filled here with the rows of a small analytics folder; the reader returns
them exactly as the file reader does, filters in the database, and the dashboard's
analytics answer shows the same totals. A missing password is one line, without secrets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_rtbf.cli import main
from beam_rtbf.dashboard import data
from beam_rtbf.dashboard.analytics_pg import PASSWORD_ENV, AnalyticsUnavailable, PostgresAnalytics
from beam_rtbf.dashboard.app import DashboardConfig, build_app
from beam_rtbf.records import iso_ms
from beam_rtbf.sinks.postgres import PASSWORD_ENV as SINK_PASSWORD_ENV
from beam_rtbf.testing.postgres_server import PostgresServer
from tests.helpers.dash_callbacks import analytics_answer

pytestmark = [pytest.mark.slow, pytest.mark.integration]

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
# The analytics sink's table (issue 14's contract).
TABLE_DDL = """
CREATE TABLE {table} (
    window_start timestamptz NOT NULL, window_end timestamptz NOT NULL,
    action_type text NOT NULL, device_type text NOT NULL,
    sessions bigint NOT NULL, distinct_users bigint NOT NULL, avg_secs_elapsed double precision,
    PRIMARY KEY (window_start, action_type, device_type)
)"""


def _rows() -> list[dict]:
    rows = []
    for minute in range(0, 180, 7):
        for i, (action, device) in enumerate([("view", "iPhone"), ("click", "Mac Desktop"), ("view", "Mac Desktop")]):
            start = T0 + minute * 60_000
            rows.append(
                {
                    "window_start": iso_ms(start),
                    "window_end": iso_ms(start + 60_000),
                    "action_type": action,
                    "device_type": device,
                    "sessions": minute % 5 + i + 1,
                    "distinct_users": minute % 3 + 1,
                    "avg_secs_elapsed": minute * 1.25 + i,
                }
            )
    return rows


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def filled(postgres, tmp_path_factory) -> Path:
    """The same rows in OUTPUT/analytics files and in the table ``rtbf_analytics``."""
    out = tmp_path_factory.mktemp("pg-dashboard") / "out"
    rows = _rows()
    for hour in range(3):
        folder = out / "analytics" / "dt=2026-01-01" / f"hour={hour:02d}"
        folder.mkdir(parents=True)
        (folder / "pane-r1-x.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows if r["window_start"][11:13] == f"{hour:02d}")
        )
    with postgres.connect() as conn:
        conn.execute(TABLE_DDL.format(table="rtbf_analytics"))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO rtbf_analytics VALUES (%(window_start)s, %(window_end)s, %(action_type)s, "
                "%(device_type)s, %(sessions)s, %(distinct_users)s, %(avg_secs_elapsed)s)",
                rows,
            )
    return out


def _sorted(table):
    return table.sort_by([("window_start", "ascending"), ("action_type", "ascending"), ("device_type", "ascending")])


def test_reader_returns_the_files_rows(postgres, filled, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, postgres.password)
    reader = PostgresAnalytics(f"{postgres.host_uri}?table=rtbf_analytics")
    from_db, from_files = reader.read(), data.analytics_frame(filled)
    assert from_db.num_rows == from_files.num_rows == len(_rows())
    assert _sorted(from_db).to_pylist() == _sorted(from_files).to_pylist()
    filters = data.AnalyticsFilters(action_types=("view",), device_types=("Mac Desktop",))
    in_db = reader.read(filters)
    assert _sorted(in_db).to_pylist() == _sorted(data.analytics_frame(filled, filters)).to_pylist()
    assert data.analytics_totals(in_db).sessions == sum(
        r["sessions"] for r in _rows() if r["action_type"] == "view" and r["device_type"] == "Mac Desktop"
    )


def test_dashboard_analytics_from_postgres(postgres, filled, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, postgres.password)
    app = build_app(DashboardConfig(filled, None, None, f"{postgres.host_uri}?table=rtbf_analytics"))
    answer = analytics_answer(app.server.test_client(), devices=["iPhone"])
    assert answer.status_code == 200
    totals = json.loads(answer.data)["response"]["analytics-totals"]["children"]
    shown = {
        card["props"]["children"][1]["props"]["id"]: card["props"]["children"][1]["props"]["children"]
        for card in totals
    }
    assert shown["analytics-sessions"] == f"{sum(r['sessions'] for r in _rows() if r['device_type'] == 'iPhone'):,}"
    assert shown["analytics-rows"] == str(len([r for r in _rows() if r["device_type"] == "iPhone"]))


def test_wrong_or_missing_password_is_one_line(postgres, filled, monkeypatch, capsys):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(filled / "no-pgpass"))
    with pytest.raises(AnalyticsUnavailable, match="analytics table rtbf_analytics unreadable: "):
        PostgresAnalytics(postgres.host_uri).read()
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    assert main(["dashboard", f"--output={filled}", f"--analytics={postgres.host_uri}?table=rtbf_analytics"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "password authentication failed" in err and "not-the-password" not in err
    monkeypatch.setenv(PASSWORD_ENV, postgres.password)
    with pytest.raises(AnalyticsUnavailable, match='relation "nope" does not exist'):
        PostgresAnalytics(f"{postgres.host_uri}?table=nope").read()


def test_the_dashboard_reads_what_the_sink_wrote(postgres, tmp_path, monkeypatch):
    """A run with --analytics_sink into a table, then the dashboard's reader on that table: the
    rows the run wrote to its files, exactly (the sink's view is the reader's contract)."""
    monkeypatch.setenv(SINK_PASSWORD_ENV, postgres.password)
    monkeypatch.setenv(PASSWORD_ENV, postgres.password)
    sessions = tmp_path / "sessions.jsonl"
    sessions.write_text(
        "".join(
            json.dumps(
                {
                    "user_id": f"u{i % 13}",
                    "event_time": iso_ms(T0 + i * 7_000),
                    "action_type": ["view", "click"][i % 2],
                    "device_type": ["iPhone", "Mac Desktop", "Android Phone"][i % 3],
                    "secs_elapsed": i % 50,
                }
            )
            + "\n"
            for i in range(900)
        )
    )
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"request_id": "r1", "subject_id": "u3", "requested_at": iso_ms(T0)}) + "\n")
    out = tmp_path / "out"
    table = f"{postgres.host_uri}?table=sink_for_dashboard"
    assert (
        main(
            [
                "run",
                f"--sessions=file://{sessions}",
                f"--requests=file://{requests}",
                f"--output={out}",
                f"--registry=embedded://{tmp_path / 'r.sqlite'}",
                f"--analytics_sink={table}",
            ]
        )
        == 0
    )
    from_files = data.analytics_frame(out)
    from_db = PostgresAnalytics(table).read()
    assert from_files.num_rows > 100
    assert _sorted(from_db).to_pylist() == _sorted(from_files).to_pylist()
    summary = json.loads((out / "summary.json").read_text())
    assert data.analytics_totals(from_db).sessions == summary["clean"] == sum(1 for i in range(900) if i % 13 != 3)
