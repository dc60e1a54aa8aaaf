"""The dashboard's data functions on small real output folders: exact figures, never an identifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_rtbf.dashboard import data
from beam_rtbf.dashboard.privacy import REDACTED, Redactor, load_hasher, reason_category, request_ref
from beam_rtbf.manifests.build import manifest_path
from beam_rtbf.purge.hashing import SubjectHasher
from beam_rtbf.purge.receipts import receipt_path
from beam_rtbf.records import ErasureRequest, iso_ms
from beam_rtbf.registry.embedded import EmbeddedRegistry

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
HASHER = SubjectHasher(key=b"k" * 40)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _row(minute: int, action: str, device: str, sessions: int, users: int, avg: float) -> dict:
    start = T0 + minute * 60_000
    return {
        "window_start": iso_ms(start),
        "window_end": iso_ms(start + 60_000),
        "action_type": action,
        "device_type": device,
        "sessions": sessions,
        "distinct_users": users,
        "avg_secs_elapsed": avg,
    }


ROWS_H0 = [
    _row(0, "view", "iPhone", 4, 3, 10.0),
    _row(0, "click", "iPhone", 2, 2, 40.0),
    _row(5, "view", "Mac", 1, 1, 7.5),
]
ROWS_H1 = [_row(60, "view", "iPhone", 3, 3, 20.0), _row(61, "click", "Mac", 5, 4, 2.0)]


@pytest.fixture
def analytics_out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    _write_jsonl(out / "analytics/dt=2026-01-01/hour=00/pane-r1-a.jsonl", ROWS_H0)
    _write_jsonl(out / "analytics/dt=2026-01-01/hour=01/pane-r1-b.jsonl", ROWS_H1)
    (out / "analytics/dt=2026-01-01/hour=01/empty.jsonl").write_text("")
    # Not published: a temporary of an atomic write, and a bounded run's staging folder.
    _write_jsonl(out / "analytics/dt=2026-01-01/hour=01/.tmp-abc-pane.jsonl", [_row(62, "view", "Mac", 99, 9, 1.0)])
    _write_jsonl(
        out / "analytics/_staging/r2/dt=2026-01-01/hour=01/pane-r2.jsonl", [_row(62, "view", "Mac", 99, 9, 1.0)]
    )
    return out


def test_analytics_totals_equal_the_files(analytics_out):
    rows = ROWS_H0 + ROWS_H1
    totals = data.analytics_totals(data.analytics_frame(analytics_out))
    assert totals == data.AnalyticsTotals(
        rows=5,
        windows=4,
        sessions=sum(r["sessions"] for r in rows),  # 15
        distinct_users=sum(r["distinct_users"] for r in rows),  # 13
        avg_secs_elapsed=pytest.approx(sum(r["sessions"] * r["avg_secs_elapsed"] for r in rows) / 15),
    )
    assert totals.sessions == 15 and totals.distinct_users == 13
    assert totals.avg_secs_elapsed == pytest.approx((40 + 80 + 7.5 + 60 + 10) / 15)


def test_analytics_filters_and_choices(analytics_out):
    table = data.analytics_frame(analytics_out, data.AnalyticsFilters(action_types=("view",), device_types=("iPhone",)))
    assert data.analytics_totals(table).sessions == 4 + 3
    assert data.analytics_choices(data.analytics_frame(analytics_out)) == (["click", "view"], ["Mac", "iPhone"])
    none = data.analytics_frame(analytics_out, data.AnalyticsFilters(device_types=("Android",)))
    assert data.analytics_totals(none) == data.AnalyticsTotals(0, 0, 0, 0, None)


def test_analytics_series_per_hour_and_window(analytics_out):
    table = data.analytics_frame(analytics_out)
    per_hour = data.analytics_series(table, "sessions", "action_type", "hour")
    assert per_hour == {
        "click": (["2026-01-01T00:00:00.000Z", "2026-01-01T01:00:00.000Z"], [2.0, 5.0]),
        "view": (["2026-01-01T00:00:00.000Z", "2026-01-01T01:00:00.000Z"], [5.0, 3.0]),
    }
    avg = data.analytics_series(table, "avg_secs_elapsed", "none", "day")
    assert avg == {"all together": (["2026-01-01T00:00:00.000Z"], [pytest.approx(197.5 / 15)])}
    windows = data.analytics_series(table, "distinct_users", "device_type", "window")
    assert windows["Mac"] == (["2026-01-01T00:05:00.000Z", "2026-01-01T01:01:00.000Z"], [1.0, 4.0])
    with pytest.raises(ValueError, match="unknown metric"):
        data.analytics_series(table, "secs", "action_type", "hour")


def test_run_figures_latest_runs_and_purges(tmp_path):
    out = tmp_path / "out"
    summary = {
        "sessions_in": 10,
        "clean": 6,
        "suppressed": 3,
        "dead_lettered": 1,
        "sessions_per_s": 5.5,
        "elapsed_s": 2.0,
        "runner": "FnApiRunner",
        "mode": "bounded",
        "run_id": "r2",
        "registry": "redis://:secret@host:6379/0",
        "sessions": "kafka://broker/topic",
    }
    out.mkdir()
    (out / "summary.json").write_text(json.dumps(summary))
    (out / "_runs").mkdir()
    for run_id, started, sessions_in in (("r1", "2026-01-01T00:00:00.000Z", 7), ("r2", "2026-01-02T00:00:00.000Z", 10)):
        record = {
            "run_id": run_id,
            "state": "committed",
            "started_at": started,
            "committed_at": started,
            "summary": {**summary, "sessions_in": sessions_in},
        }
        (out / "_runs" / f"{run_id}.json").write_text(json.dumps(record))
    (out / "receipts" / "_runs").mkdir(parents=True)
    (out / "receipts/_runs/20260103T000000Z-aa-summary.json").write_text(
        json.dumps(
            {
                "run": "20260103T000000Z-aa",
                "requests_pending": 3,
                "verified": 2,
                "incomplete": ["x"],
                "blocked": [],
                "archive_records_removed": 12,
                "elapsed_s": 1.5,
            }
        )
    )
    figures = data.run_figures(out)
    assert figures.latest["sessions_in"] == 10 and figures.latest["dead_lettered"] == 1
    assert "registry" not in figures.latest and "sessions" not in figures.latest  # URIs may hold secrets
    assert [(r.run_id, r.sessions_in, r.clean) for r in figures.runs] == [("r2", 10, 6), ("r1", 7, 6)]
    assert figures.purges == [data.PurgeRunRow("20260103T000000Z-aa", 3, 2, 1, 0, 12, 1.5)]
    assert data.run_figures(tmp_path / "nothing") == data.RunFigures(None, [], [])


# -- requests ------------------------------------------------------------------------------------

NOW = T0 + 40 * DAY  # 2026-02-10


def _requests_out(tmp_path: Path) -> tuple[Path, EmbeddedRegistry, dict[str, ErasureRequest]]:
    """Four requests: verified (with receipt), suppressed (overdue), received (open, ccpa), received (open)."""
    out = tmp_path / "out"
    registry = EmbeddedRegistry(str(tmp_path / "registry.sqlite"))
    requests = {
        "done": ErasureRequest("erase-alice@example.com", "alice", T0, aliases=("alice@example.com",)),
        "late": ErasureRequest("req-bob", "bob", T0 + DAY),
        "ccpa": ErasureRequest("req-carol", "carol", T0 + 21 * DAY, regulation="ccpa"),
        "open": ErasureRequest("req-dave", "dave", T0 + 35 * DAY),
    }
    accepted = {k: a for k, a in zip(requests, registry.add(list(requests.values())))}
    for key in ("done", "late"):
        a = accepted[key]
        registry.record_event(a.request.request_id, "suppressed", a.accepted_at_ms + 250 * (1 if key == "done" else 4))
        body = {
            "manifest_version": 1,
            "request_id": a.request.request_id,
            "subject_ids": list(a.request.subject_ids),
            "regulation": "gdpr",
            "requested_at": iso_ms(a.request.requested_at_ms),
            "accepted_at": iso_ms(a.accepted_at_ms),
            "effective_at": iso_ms(a.accepted_at_ms + 250 * (1 if key == "done" else 4)),
            "deadline": iso_ms(a.request.deadline_ms),
            "status": "pending",
            "locations": {},
        }
        path = Path(manifest_path(str(out / "manifests"), a.request.request_id))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(body))
    done = accepted["done"]
    registry.record_event(done.request.request_id, "purged", done.accepted_at_ms + 5000, "archive 3 records")
    registry.record_event(
        done.request.request_id, "verified", done.accepted_at_ms + 5001, "receipt erase-alice_...json"
    )
    receipt = {
        "request_id": done.request.request_id,
        "subject_hash": HASHER.hash("alice"),
        "alias_hashes": [HASHER.hash("alice@example.com")],
        "regulation": "gdpr",
        "deadline": iso_ms(done.request.deadline_ms),
        "purge_run": "p1",
        "status": "verified",
        "records_removed": {"archive_partition": 3, "index": 2, "deadletter": 1},
        "locations": [
            {
                "kind": "archive_partition",
                "path": "dt=2026-01-01/hour=00/part-a.parquet",
                "status": "rewritten",
                "records_removed": 3,
                "records_after": 7,
                "verified": True,
                "verification": "re-scan found 0 records of the subject",
                "at": "t",
                "secret_field": "alice",
            },
            {
                "kind": "api",
                "location": "https://api.example/erase",
                "status": "failed",
                "verified": False,
                "reason": "HTTP 500: no such user alice@example.com",
            },
        ],
        "verification": {
            "passed": True,
            "found": 0,
            "found_in": [],
            "unreadable": [],
            "method": "scan",
            "scanned": {"rows": 20, "archive_files": 2, "index_files": 1, "deadletter_files": 1},
        },
        "completed_at": "c",
    }
    path = Path(receipt_path(str(out / "receipts"), done.request.request_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(receipt))
    return out, registry, requests


RAW_IDS = [
    "alice",
    "alice@example.com",
    "bob",
    "carol",
    "dave",
    "erase-alice@example.com",
    "req-bob",
    "req-carol",
    "req-dave",
]


def test_requests_table_by_deadline_with_status_counts(tmp_path):
    out, registry, requests = _requests_out(tmp_path)
    view = data.requests_table(out, registry, NOW, HASHER)
    by_ref = {request_ref(HASHER, r.request_id): k for k, r in requests.items()}
    assert [by_ref[r.ref] for r in view.rows] == [
        "done",
        "late",
        "open",
        "ccpa",
    ]  # deadlines: Jan 31, Feb 1, Mar 7, Mar 8
    assert view.counts_by_status == {"received": 2, "suppressed": 1, "verified": 1}
    assert view.overdue == 1
    rows = {by_ref[r.ref]: r for r in view.rows}
    assert rows["late"].overdue and rows["late"].days_left == pytest.approx((T0 + DAY + 30 * DAY - NOW) / DAY)
    assert rows["late"].days_left == pytest.approx(-9.0)
    assert not rows["done"].overdue and rows["done"].status == "verified"  # done, though past its deadline
    assert rows["ccpa"].days_left == pytest.approx(26.0) and rows["open"].days_left == pytest.approx(25.0)
    assert rows["done"].records_removed == 6 and rows["done"].has_receipt
    assert rows["late"].records_removed is None and not rows["late"].has_receipt
    assert rows["done"].subject_hash == HASHER.hash("alice")  # from the receipt
    assert rows["late"].subject_hash == HASHER.hash("bob")  # computed: no receipt yet
    assert not view.redactor.found(repr(view.rows))
    for raw in RAW_IDS:
        assert view.redactor(f"x {raw} y") == f"x {REDACTED} y"


def test_latencies_from_the_manifests(tmp_path):
    out, registry, _ = _requests_out(tmp_path)
    lat = data.latencies(data.requests_table(out, registry, NOW, HASHER).rows)
    assert lat.values_s == [0.25, 1.0] and lat.p50_s == 0.25 and lat.p99_s == 1.0 and lat.max_s == 1.0
    rows = [
        data.RequestRow("r", "h", "gdpr", "x", None, 0, ms, None, None, None, None, False, None, False)
        for ms in range(1000, 101_000, 1000)
    ]  # 1..100 s
    lat = data.latencies(rows)
    assert (lat.count, lat.p50_s, lat.p99_s, lat.max_s) == (100, 50.0, 99.0, 100.0)
    assert data.latencies([]) == data.Latencies([], None, None, None)


def test_requests_from_manifests_without_a_registry(tmp_path):
    out, _registry, requests = _requests_out(tmp_path)
    view = data.requests_table(out, None, NOW, HASHER)
    assert view.counts_by_status == {"suppressed": 2}  # only the manifests are known; the receipt is read too
    assert sorted(r.has_receipt for r in view.rows) == [False, True]


def test_receipt_view_shows_hashes_and_redacts(tmp_path):
    out, registry, requests = _requests_out(tmp_path)
    ref = request_ref(HASHER, requests["done"].request_id)
    page = data.receipt_view(out, registry, HASHER, ref, NOW)
    assert [s["step"] for s in page["timeline"]] == ["requested", "accepted", "effective", "purged", "verified"]
    receipt = page["receipt"]
    assert receipt["records_removed"] == {"archive_partition": 3, "index": 2, "deadletter": 1}
    assert receipt["alias_hashes"] == [HASHER.hash("alice@example.com")]
    archive, api = receipt["locations"]
    assert "secret_field" not in archive  # only listed fields are shown
    assert api["reason"] == f"HTTP 500: no such user {REDACTED}"
    assert receipt["verification"]["passed"] is True and receipt["verification"]["scanned"]["rows"] == 20
    text = json.dumps(page, default=repr)
    assert [i for i in RAW_IDS if f'"{i}"' in text or f" {i}" in text] == []
    open_ref = request_ref(HASHER, requests["open"].request_id)
    assert data.receipt_view(out, registry, HASHER, open_ref, NOW)["receipt"] is None
    assert data.receipt_view(out, registry, HASHER, "r-unknown", NOW) is None


# -- dead letters --------------------------------------------------------------------------------


def test_dead_letters_by_reason_category(tmp_path):
    out = tmp_path / "out"
    letters = [
        {"stream": "sessions", "reason": "non-numeric secs_elapsed 'fast'", "raw": '{"user_id": "u4"}'},
        {"stream": "sessions", "reason": "non-numeric secs_elapsed 'slow'", "raw": '{"user_id": "u5"}'},
        {"stream": "sessions", "reason": "malformed JSON: Expecting value at column 35", "raw": "{"},
        {"stream": "sessions", "reason": "malformed JSON: Expecting value at column 9", "raw": "{"},
        {"stream": "requests", "reason": "bad time 'zed@example.com'", "raw": "x"},
        {"stream": "requests", "reason": "duplicate request id for another subject zed", "raw": "x"},
    ]
    _write_jsonl(out / "deadletter/deadletter-r1-a.jsonl", letters[:4])
    _write_jsonl(out / "deadletter/deadletter-r2-b.jsonl", letters[4:])
    (out / "deadletter/deadletter-r2-b.jsonl").open("a").write("not json\n\n")
    _write_jsonl(out / "deadletter/_staging/r3/deadletter-r3.jsonl", letters)  # not published
    counts = data.dead_letters(out, Redactor(["zed"]))
    assert counts.total == 6 and counts.files == 2 and counts.unreadable_lines == 1
    assert counts.by_reason == [
        ("sessions", "malformed JSON: Expecting value at column N", 2),
        ("sessions", "non-numeric secs_elapsed '…'", 2),
        ("requests", "bad time '…'", 1),
        ("requests", f"duplicate request id for another subject {REDACTED}", 1),
    ]
    assert data.dead_letters(tmp_path / "none") == data.DeadLetterCounts(0, [], 0, 0)


# -- privacy helpers -----------------------------------------------------------------------------


def test_redactor_matches_ids_not_inside_longer_words():
    redact = Redactor(["u12", "a.b@example.com", "u12-x"])
    assert redact("u12 and u123 and xu12 and (u12).") == f"{REDACTED} and u123 and xu12 and ({REDACTED})."
    assert redact('mail "a.b@example.com".') == f'mail "{REDACTED}".'
    assert redact("u12-x u12-y u12@z.org") == f"{REDACTED} {REDACTED}-y {REDACTED}@z.org"  # longest first
    many = Redactor([f"u{i:07d}" for i in range(2000)])
    assert many("see u0001999, u0002000 and u0000000") == f"see {REDACTED}, u0002000 and {REDACTED}"
    assert Redactor([])("u12") == "u12" and not Redactor([]).found("u12")


def test_request_ref_is_keyed_and_apart_from_subject_hashes():
    ref = request_ref(HASHER, "alice")
    assert ref.startswith("r-") and len(ref) == 18 and "alice" not in ref
    assert ref == request_ref(SubjectHasher(key=b"k" * 40), "alice")
    assert ref != request_ref(SubjectHasher(key=b"j" * 40), "alice")
    assert ref[2:] not in HASHER.hash("alice")


def test_load_hasher_creates_no_key_file(tmp_path, monkeypatch):
    monkeypatch.delenv("RTBF_SUBJECT_HASH_KEY", raising=False)
    key_file = tmp_path / "_state" / "subject-hash.key"
    load_hasher(str(key_file)).hash("x")
    assert not key_file.exists() and not key_file.parent.exists()
    key_file.parent.mkdir()
    key_file.write_text("f" * 64)
    assert load_hasher(str(key_file)).hash("x") == SubjectHasher(key=b"f" * 64).hash("x")
    monkeypatch.setenv("RTBF_SUBJECT_HASH_KEY", "env-key")
    assert load_hasher(str(key_file)).hash("x") == SubjectHasher(key=b"env-key").hash("x")


@pytest.mark.parametrize(
    "reason, category",
    [
        ("bad UTF-8 at byte 12", "bad UTF-8 at byte N"),
        (
            "malformed JSON: Expecting value: line 1 column 35 (char 34)",
            "malformed JSON: Expecting value: line N column N (char N)",
        ),
        (
            "bad event_time: not RFC 3339 or epoch millis in [0, year 9999]",
            "bad event_time: not RFC 3339 or epoch millis in [0, year 9999]",
        ),
        ('bad time "x\\"y" here', "bad time '…' here"),
        ("", "no reason given"),
    ],
)
def test_reason_category(reason, category):
    assert reason_category(reason) == category
