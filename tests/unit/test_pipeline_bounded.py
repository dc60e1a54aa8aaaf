"""Bounded runs end to end through ``run()``: conservation, no forgotten data, idempotency, bad input."""

from __future__ import annotations

import json
import os

import pytest

from beam_rtbf.generate import generate_files
from beam_rtbf.pipeline import run
from beam_rtbf.registry import RegistryUnavailable, open_registry
from beam_rtbf.sources.synthetic import SyntheticConfig, planned_requests
from tests.helpers.data import analytics_rows, archive_rows, dead_letters, manifests

pytestmark = pytest.mark.slow


def _run(tmp_path, registry_url, sessions: str, requests: str, *extra: str) -> dict:
    return run(
        [
            f"--output={tmp_path / 'out'}",
            f"--registry={registry_url}",
            f"--sessions={sessions}",
            f"--requests={requests}",
            *extra,
        ]
    )


def test_generated_run_conserves_sessions_and_leaks_no_forgotten_subject(tmp_path, registry_url):
    cfg = SyntheticConfig(users=2_000, sessions=30_000, requests=50, seed=7, bad_rate=0.002, span_s=7_200)
    data = generate_files(cfg, str(tmp_path / "data"), "jsonl", files=2)
    forgotten = set(data.forgotten_subjects)

    summary = _run(tmp_path, registry_url, f"file://{tmp_path}/data/sessions-*.jsonl", f"file://{data.requests_file}")

    assert summary["sessions_in"] == data.sessions + data.bad_records
    assert summary["dead_lettered"] == data.bad_records > 0
    assert summary["sessions_in"] == summary["clean"] + summary["suppressed"] + summary["dead_lettered"]
    assert summary["conservation_ok"] is True
    assert summary["suppressed"] > 0
    assert summary["requests_accepted"] == 50 and summary["manifests_written"] == 50
    out = str(tmp_path / "out")
    archived = archive_rows(out)
    assert archived.num_rows == summary["clean"] == summary["archive_records"]
    assert forgotten.isdisjoint(archived.column("user_id").to_pylist())
    assert sum(row["sessions"] for row in analytics_rows(out)) == summary["clean"]
    letters = dead_letters(out)
    assert len(letters) == data.bad_records
    assert all(letter["reason"] and letter["position"].startswith(f"{tmp_path}/data/sessions-") for letter in letters)
    # Expected suppressed count, computed independently from the generated files.
    total_forgotten = 0
    for path in data.session_files:
        with open(path, "rb") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and row.get("user_id") in forgotten:
                    total_forgotten += 1
    assert summary["suppressed"] == total_forgotten
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as handle:
        assert json.load(handle)["clean"] == summary["clean"]


def test_same_request_twice_gives_one_registry_entry_and_one_manifest(tmp_path, registry_url):
    line = json.dumps({"request_id": "r-1", "subject_id": "u0000001", "requested_at": "2026-01-02T00:00:00Z"})
    requests = tmp_path / "requests.jsonl"
    requests.write_text(line + "\n" + line + "\n")
    sessions = "synthetic://sessions?users=100&sessions=2000&seed=3"

    first = _run(tmp_path, registry_url, sessions, f"file://{requests}")
    assert (first["requests_in"], first["requests_accepted"], first["requests_duplicate"]) == (2, 1, 1)
    assert first["manifests_written"] == 1
    # The same input again is a no-op (run ledger); --append really runs it, and the registry dedupes.
    assert _run(tmp_path, registry_url, sessions, f"file://{requests}")["already_committed"] == first["run_id"]
    second = _run(tmp_path, registry_url, sessions, f"file://{requests}", "--append")
    assert (second["requests_accepted"], second["requests_duplicate"], second["manifests_written"]) == (0, 2, 0)
    assert first["suppressed"] == second["suppressed"] > 0
    with open_registry(registry_url) as registry:
        assert [a.request.request_id for a in registry.requests()] == ["r-1"]
        assert registry.version() == 1
    assert list(manifests(str(tmp_path / "out"))) == ["r-1"]


def test_subject_forgotten_outside_the_pipeline_is_filtered(tmp_path, registry_url):
    """``beam-rtbf forget`` writes the registry; the next run's snapshot filters the subject."""
    from beam_rtbf.cli import main

    assert main(["forget", "u0000005", "--request-id", "cli-1", "--registry", registry_url]) == 0
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    summary = _run(tmp_path, registry_url, "synthetic://sessions?users=10&sessions=5000&seed=2", f"file://{empty}")
    archived = archive_rows(str(tmp_path / "out")).column("user_id").to_pylist()
    assert "u0000005" not in archived
    assert summary["suppressed"] == 5000 - len(archived) > 0


def test_corpus_of_bad_records_is_dead_lettered_with_reasons(tmp_path, registry_url):
    good = json.dumps({"user_id": "ok", "event_time": "2026-01-01T00:00:00Z", "secs_elapsed": 1.0})
    corpus = {
        b'{"user_id": "x", "secs_elapsed": ': "malformed JSON",
        b'{"action": "show"}': "missing user_id",
        b'{"user_id": "  "}': "missing user_id",
        b'{"user_id": "x", "event_time": "yesterday"}': "bad event_time",
        b'{"user_id": "x", "secs_elapsed": -3}': "negative secs_elapsed",
        b'{"user_id": "x", "secs_elapsed": "slow"}': "non-numeric secs_elapsed",
        b'{"user_id": "x\xff"}': "bad UTF-8",
        b'{"user_id": "x", "pad": "' + b"y" * 70_000 + b'"}': "oversize record",
        b"[1, 2]": "not an object",
    }
    sessions = tmp_path / "bad.jsonl"
    sessions.write_bytes(b"".join([good.encode() + b"\n"] + [line + b"\n" for line in corpus]))
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(b'{"request_id": "r"}\nnot json\n')

    summary = _run(tmp_path, registry_url, f"file://{sessions}", f"file://{requests}")
    assert (summary["sessions_in"], summary["clean"], summary["dead_lettered"]) == (10, 1, 9)
    assert summary["requests_dead_lettered"] == 2 and summary["requests_accepted"] == 0
    letters = dead_letters(str(tmp_path / "out"))
    session_letters = sorted(l["reason"] for l in letters if l["stream"] == "sessions")
    for expected in corpus.values():
        assert sum(expected in reason for reason in session_letters) >= 1, (expected, session_letters)
    request_reasons = sorted(l["reason"] for l in letters if l["stream"] == "requests")
    assert request_reasons == ["malformed JSON: Expecting value at column 1", "missing subject_id"]


def test_shared_event_stream_counts_only_tagged_erasure_events(tmp_path, registry_url):
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                json.dumps({"type": "page_view", "user_id": "u0000001"}),
                json.dumps(
                    {
                        "type": "gdpr.delete_user",
                        "data": {"request_id": "d-1", "subject_id": "u0000001", "requested_at": 1767225600000},
                    }
                ),
                json.dumps({"type": "password_reset", "user_id": "u0000002"}),
            ]
        )
        + "\n"
    )
    summary = _run(
        tmp_path,
        registry_url,
        "synthetic://sessions?users=20&sessions=1000&seed=4",
        f"file://{events}",
        "--request_tag_field=type",
        "--request_tag_values=gdpr.delete_user",
        "--request_payload_field=data",
    )
    assert (summary["requests_in"], summary["requests_ignored"], summary["requests_accepted"]) == (3, 2, 1)
    assert summary["requests_dead_lettered"] == 0
    assert "u0000001" not in archive_rows(str(tmp_path / "out")).column("user_id").to_pylist()


def test_airbnb_csv_layout_runs_with_arrival_time(tmp_path, registry_url):
    cfg = SyntheticConfig(users=300, sessions=3_000, requests=5, seed=9)
    data = generate_files(cfg, str(tmp_path / "data"), "csv")
    summary = _run(tmp_path, registry_url, f"file://{data.session_files[0]}", f"file://{data.requests_file}")
    assert summary["sessions_in"] == 3_000 and summary["dead_lettered"] == 0
    forgotten = {r.subject_id for r in planned_requests(cfg)}
    assert forgotten.isdisjoint(archive_rows(str(tmp_path / "out")).column("user_id").to_pylist())
    assert summary["clean"] + summary["suppressed"] == 3_000


def test_invalid_options_fail_before_running(tmp_path, registry_url):
    with pytest.raises(ValueError, match="--window_s must be >= 1"):
        _run(
            tmp_path, registry_url, "synthetic://sessions?sessions=1", "synthetic://requests?requests=0", "--window_s=0"
        )
    with pytest.raises(ValueError, match="no source for scheme 'ftp'"):
        _run(tmp_path, registry_url, "ftp://x/y", "synthetic://requests?requests=0")
    with pytest.raises(RegistryUnavailable, match=r"deletion registry unavailable after retrying for 0.5 s \(--"):
        _run(
            tmp_path,
            "embedded:///proc/no/such/registry.sqlite",
            "synthetic://sessions?sessions=1",
            "synthetic://requests?requests=0",
            "--registry_retry_s=0.5",
        )


def test_object_store_globs_are_file_sources_and_a_missing_path_is_refused():
    from beam_rtbf.sources import source_for
    from beam_rtbf.sources.files import FileSource

    s3 = source_for("s3://acme-raw/sessions/2026-10-*.jsonl.gz?format=jsonl", "sessions")
    assert isinstance(s3, FileSource) and s3.bounded
    assert (s3.pattern, s3.fmt) == ("s3://acme-raw/sessions/2026-10-*.jsonl.gz", "jsonl")
    assert source_for("gs://b/x/*.csv", "sessions").pattern == "gs://b/x/*.csv"
    assert source_for("file:///data/x.jsonl", "sessions").pattern == "/data/x.jsonl"
    for uri in ("s3://", "file://"):
        with pytest.raises(ValueError, match="has no path"):
            source_for(uri, "sessions")


def test_a_file_glob_that_matches_nothing_is_one_clear_error_before_the_run(tmp_path, registry_url):
    with pytest.raises(ValueError, match=r"no file matches .*/nothing-here/\*\.jsonl"):
        _run(tmp_path, registry_url, f"file://{tmp_path}/nothing-here/*.jsonl", "synthetic://requests?requests=0")
    assert not (tmp_path / "out").exists()  # failed before anything was written
