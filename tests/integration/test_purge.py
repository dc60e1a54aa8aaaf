"""``beam-rtbf purge`` end to end on real files: erasure, receipts, lifecycle, crash, guard, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_rtbf.cli import main
from beam_rtbf.job import OutputInUse
from beam_rtbf.purge import faults
from beam_rtbf.purge.hashing import SubjectHasher
from beam_rtbf.purge.lock import PurgeLock
from beam_rtbf.registry import open_registry
from beam_rtbf.testing.erasure_api import ErasureApiServer
from tests.helpers.crash_purge import crash_purge_command
from tests.helpers.purge_setup import (
    ALL_IDS,
    FORGOTTEN,
    GUEST_WITH_ALIAS,
    aggregate_archive,
    analytics_rows,
    analytics_sessions,
    archive_counts,
    archive_table,
    build,
    files_mentioning,
    manifest,
    manifest_file,
    read_receipt,
)

pytestmark = [pytest.mark.slow]


@pytest.fixture(params=["one_step", "wide"])
def setup(setup, request):
    """Every test twice: a plan this small runs as one step by default; ``wide`` forces the graph
    that spreads the files over workers (what larger plans and cluster runs get)."""
    if request.param == "wide":
        return dataclasses.replace(setup, extra=(*setup.extra, "--one_step_max_files=0"))
    return setup


def _timeline(registry_url: str, request_id: str) -> list[str]:
    with open_registry(registry_url) as registry:
        return [e.status for e in registry.timeline(request_id)]


def test_purge_erases_every_identifier_everywhere_and_keeps_everyone_else(setup, capsys):
    # Before: the subjects are in the archive, its index, the dead letters and the manifests.
    before = files_mentioning(setup.out, ALL_IDS)
    assert any(p.startswith("archive/dt=") for p in before)
    assert any(p.startswith("archive/_index/") for p in before)
    assert any(p.startswith("deadletter/") for p in before)
    assert setup.subject_records == {"req-a": 13, "req-b": 12, "req-c": 4}
    # Conservation: the analytics counted exactly the archived sessions.
    assert analytics_sessions(setup.out) == sum(setup.counts_before.values())

    assert setup.purge() == 0
    assert "verified                  3" in capsys.readouterr().out

    # After: no identifier anywhere in the run directory (archive, index, dead letters, manifests,
    # receipts, audit, analytics); the registry keeps them, by contract, to keep filtering.
    assert files_mentioning(setup.out, ALL_IDS) == {}
    assert archive_counts(setup.out) == setup.expected_after
    # The windows that counted the subjects were recomputed: every analytics row equals an
    # independent aggregation of the purged archive, and the totals are conserved.
    assert analytics_sessions(setup.out) == sum(setup.expected_after.values())
    assert analytics_rows(setup.out) == aggregate_archive(setup.out)
    windows = [loc for loc in read_receipt(setup.out, "req-a")["locations"] if loc["kind"] == "analytics_window"]
    assert windows and all(w["verified"] and w["sessions_after"] < w["sessions_before"] for w in windows)
    assert GUEST_WITH_ALIAS not in archive_counts(setup.out)  # found through Alice's email alias
    assert archive_counts(setup.out)["user-00"] == setup.counts_before["user-00"] - 1  # carol's device
    # The other user's dead letter is still there.
    dead = b"".join(p.read_bytes() for p in (setup.out / "deadletter").glob("*.jsonl"))
    assert b"user-03" in dead and b"bob" not in dead

    for request_id in FORGOTTEN:
        receipt = read_receipt(setup.out, request_id)
        assert receipt["status"] == "verified"
        assert receipt["records_removed"]["archive_partition"] == setup.subject_records[request_id]
        assert receipt["subject_hash"].startswith("hmac-sha256:")
        archive_locations = [loc for loc in receipt["locations"] if loc["kind"] == "archive_partition"]
        assert archive_locations and all(loc["verified"] for loc in archive_locations)
        assert [loc["kind"] for loc in receipt["locations"] if loc["kind"] == "stream"] == ["stream"]
        redacted = manifest(setup.out, request_id)
        assert redacted["status"] == "verified" and "subject_ids" not in redacted
        assert redacted["subject_hashes"][0] == receipt["subject_hash"]
        assert _timeline(setup.registry, request_id) == ["received", "suppressed", "purged", "verified"]
    assert read_receipt(setup.out, "req-b")["records_removed"]["deadletter"] == 1

    audit = [json.loads(line) for p in (setup.out / "audit").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert {a["request_id"] for a in audit if a.get("event") == "receipt"} == set(FORGOTTEN)

    # Nothing is open any more; a second purge finds nothing to do and changes nothing.
    assert main(["status", f"--registry={setup.registry}"]) == 0
    assert capsys.readouterr().out.strip() == "no open requests"
    archive_before = archive_table(setup.out)
    assert setup.purge() == 0
    assert "requests_pending          0" in capsys.readouterr().out
    assert archive_table(setup.out).equals(archive_before)


def test_a_purge_is_refused_while_another_holds_the_output_and_runs_once_it_is_gone(setup, capsys):
    """Two purges rewriting one file would undo each other's erasure: the second is refused, changes
    nothing, and runs once the first is gone (here killed with SIGKILL, which frees the lock)."""
    before = files_mentioning(setup.out, ALL_IDS)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(setup.out / "archive")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert setup.purge() == 2
        err = capsys.readouterr().err
        assert f"purge run-elsewhere (host {socket.gethostname()}, pid {holder.pid}, since " in err
        assert f"holds {setup.out / 'archive'}.purge.lock: one purge at a time per archive" in err
        assert len(err.strip().splitlines()) == 1
        assert files_mentioning(setup.out, ALL_IDS) == before
        assert not list((setup.out / "receipts").glob("*.json"))
        assert [e for r in FORGOTTEN for e in _timeline(setup.registry, r) if e not in ("received", "suppressed")] == []
    finally:
        holder.kill()
        holder.wait()
    assert setup.purge() == 0
    assert files_mentioning(setup.out, ALL_IDS) == {}
    assert {read_receipt(setup.out, r)["status"] for r in FORGOTTEN} == {"verified"}


def test_the_lock_is_the_archives_whatever_the_receipts_folder(setup, tmp_path, capsys):
    """Two purges of one archive with their receipts in different folders still exclude each other."""
    holder = PurgeLock(str(setup.out / "archive"), "run-elsewhere")
    holder.acquire()
    try:
        assert setup.purge(f"--receipts_dir={tmp_path / 'other-receipts'}") == 2
        assert "purge run-elsewhere (host" in capsys.readouterr().err
    finally:
        holder.release()
    assert not (tmp_path / "other-receipts").exists() or not list((tmp_path / "other-receipts").glob("*.json"))


class _TryTheLock:
    """At each rewrite, what another purge of the same output would be told."""

    def __init__(self, receipts: str) -> None:
        self.receipts = receipts
        self.answers: list[str] = []

    def reached(self, point: str) -> None:
        if point == "before_replace":
            try:
                PurgeLock(self.receipts, "run-intruder").acquire()
                self.answers.append("acquired")
            except OutputInUse as exc:
                self.answers.append(str(exc).split(" (")[0])


def test_the_purge_holds_the_lock_while_it_rewrites(setup):
    probe = _TryTheLock(str(setup.out / "archive"))
    previous = faults.install(probe)
    try:
        assert setup.purge() == 0
    finally:
        faults.install(previous)
    (summary_path,) = (setup.out / "receipts" / "_runs").glob("*-summary.json")
    run = json.loads(summary_path.read_text())["run"]
    assert len(probe.answers) >= 3 and set(probe.answers) == {f"purge {run}"}
    PurgeLock(str(setup.out / "archive"), "run-after").acquire()  # let go of once the purge is done


_HOLD_LOCK = """
import sys, time
from beam_rtbf.purge.lock import PurgeLock
PurgeLock(sys.argv[1], "run-elsewhere").acquire()
print("held", flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("point", ["before_replace:2", "after_replace:2", "analytics_written:1"])
def test_crash_mid_purge_then_rerun_ends_as_one_clean_run(setup, tmp_path, registry_url, point):
    mentioning_before = files_mentioning(setup.out, ALL_IDS)
    argv, env = crash_purge_command(
        point,
        ["purge", f"--output={setup.out}", f"--registry={setup.registry}", *setup.extra],
        {**os.environ, "RTBF_SUBJECT_HASH_KEY": "test-key"},
    )
    crashed = subprocess.run(argv, env=env, capture_output=True, timeout=300)
    assert crashed.returncode == 86, crashed.stderr[-2000:]
    # Killed part way: files journaled, some purged (past a replace), some not, no receipt yet.
    mentioning_crashed = files_mentioning(setup.out, ALL_IDS)
    assert list((setup.out / "receipts" / "_journal").glob("*.json"))
    if point.startswith("before_replace"):
        # The one-step shape rewrites on threads: the other file may or may not be replaced yet.
        assert set(mentioning_crashed) <= set(mentioning_before) and mentioning_crashed
    else:
        assert set(mentioning_crashed) < set(mentioning_before) and mentioning_crashed
    assert not list((setup.out / "receipts").glob("*.json"))
    assert setup.purge() == 0

    # The state of one clean run on an identical setup.
    clean = build(tmp_path / "clean", f"embedded://{tmp_path / 'clean-registry.sqlite'}")
    assert clean.purge() == 0
    assert archive_counts(setup.out) == archive_counts(clean.out) == setup.expected_after
    assert analytics_rows(setup.out) == analytics_rows(clean.out) == aggregate_archive(setup.out)
    assert files_mentioning(setup.out, ALL_IDS) == {}
    for request_id in FORGOTTEN:
        crashed_receipt, clean_receipt = read_receipt(setup.out, request_id), read_receipt(clean.out, request_id)
        assert crashed_receipt["status"] == clean_receipt["status"] == "verified"
        assert crashed_receipt["records_removed"] == clean_receipt["records_removed"]


def test_blast_radius_guard_stops_and_reports_until_confirmed(setup, capsys):
    archive_before = archive_table(setup.out)
    analytics_before = analytics_rows(setup.out)
    # 29 of ~650 records is ~4.5%: a 1% cap on the archive-wide share stops the batch.
    assert setup.purge("--max_total_share=0.01") == 3
    out = capsys.readouterr().out
    assert "STOPPED by the blast-radius guard" in out and "archive: would remove 29 of" in out
    assert archive_table(setup.out).equals(archive_before)
    assert analytics_rows(setup.out) == analytics_before  # no window recomputed either
    assert files_mentioning(setup.out / "archive", ["alice"])  # nothing deleted
    for request_id in FORGOTTEN:
        assert read_receipt(setup.out, request_id)["status"] == "blocked"
        assert _timeline(setup.registry, request_id)[-1] == "purge_blocked"
        assert manifest(setup.out, request_id)["subject_ids"]  # still pending, not redacted

    assert setup.purge("--max_total_share=0.01", "--confirm") == 0
    assert archive_counts(setup.out) == setup.expected_after


def test_partition_share_guard(setup, capsys):
    # In each hour partition the three subjects hold 9 of 209 records (4.3%).
    assert setup.purge("--max_partition_share=0.04") == 3
    assert "would remove 9 of 209 records" in capsys.readouterr().out
    assert archive_counts(setup.out) == setup.counts_before


def test_bad_manifests_are_reported_and_the_registry_decides(setup, capsys):
    manifests = setup.out / "manifests"
    (manifests / "garbage.json").write_text("{not json")
    forged = manifest(setup.out, "req-b")
    forged["request_id"] = "req-forged"
    forged["subject_ids"] = ["user-05"]
    (manifests / "req-forged.json").write_text(json.dumps(forged))
    mismatched = manifest(setup.out, "req-c")
    mismatched["subject_ids"] = ["carol", "user-06"]
    manifest_file(setup.out, "req-c").write_text(json.dumps(mismatched))  # tampered in place

    assert setup.purge() == 1
    out = capsys.readouterr().out
    assert "garbage.json: corrupt manifest: not JSON" in out
    assert "unknown request 'req-forged': not in the registry" in out
    assert f"{manifest_file(setup.out, 'req-c').name}: manifest for req-c names other subject ids" in out
    counts = archive_counts(setup.out)
    assert counts["user-05"] == setup.counts_before["user-05"]
    assert counts["user-06"] == setup.counts_before["user-06"]
    # The tampered manifest deletes nothing of user-06; req-c is still purged, from a manifest
    # rebuilt from the registry, which is the source of truth.
    assert counts["carol"] == 0 and counts["alice"] == 0 and counts["bob"] == 0
    assert manifest(setup.out, "req-c")["status"] == "verified"


def test_unreadable_archive_file_is_an_error_and_keeps_the_request_open(setup, capsys):
    target = sorted((setup.out / "archive").glob("dt=*/hour=01/*.parquet"))[0]
    target.write_bytes(b"this is not parquet")
    assert setup.purge() == 1
    out = capsys.readouterr().out
    assert "incomplete: req-a" in out
    assert target.read_bytes() == b"this is not parquet"  # left alone
    receipt = read_receipt(setup.out, "req-a")
    assert receipt["status"] == "incomplete"
    stored = str(target.relative_to(setup.out / "archive"))  # receipts name files relative to their root
    bad = [loc for loc in receipt["locations"] if loc.get("path") == stored]
    assert bad and "not a readable Parquet file" in bad[0]["verification"]
    assert _timeline(setup.registry, "req-a")[-1] == "purge_incomplete"
    assert main(["status", f"--registry={setup.registry}"]) == 0
    assert "req-a\tgdpr\tpurge_incomplete" in capsys.readouterr().out
    # The readable files were purged.
    readable = [p for p in (setup.out / "archive").glob("dt=*/hour=*/*.parquet") if p != target]
    assert len(readable) == 2
    for path in readable:
        users = set(pq.read_table(path).column("user_id").to_pylist())
        assert not users & {"alice", "bob", "carol"} and len(users) == 40  # everyone else stays


def _modes(*roots) -> dict[str, str]:
    found = {}
    for root in roots:
        paths = [root] if root.is_file() else [root, *root.rglob("*")]
        for path in paths:
            found[str(path)] = oct(stat.S_IMODE(path.stat().st_mode))
    return found


def test_outputs_registry_and_receipts_are_owner_only_by_default(setup, registry_url, capsys):
    assert setup.purge() == 0
    registry_file = Path(registry_url[len("embedded://") :])
    modes = _modes(setup.out, *registry_file.parent.glob(registry_file.name + "*"))
    assert (setup.out / "receipts").is_dir() and (setup.out / "manifests").is_dir() and registry_file.is_file()
    assert {m for m in modes.values()} <= {"0o700", "0o600"}, {p: m for p, m in modes.items() if m[-2:] != "00"}
    assert modes[str(setup.out / "archive")] == "0o700" and modes[str(registry_file)] == "0o600"


def test_status_shows_keyed_hashes_once_the_request_is_verified(setup, capsys):
    assert main(["status", "req-a", f"--registry={setup.registry}"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert (before["request"]["subject_id"], before["request"]["aliases"]) == ("alice", ["alice@example.com"])
    assert setup.purge() == 0
    capsys.readouterr()
    assert main(["status", "req-a", f"--registry={setup.registry}"]) == 0
    text = capsys.readouterr().out
    after = json.loads(text)
    hasher = SubjectHasher(key=b"test-key")  # the fixture's $RTBF_SUBJECT_HASH_KEY
    assert after["request"] == {
        "request_id": "req-a",
        "subject_hash": hasher.hash("alice"),
        "alias_hashes": [hasher.hash("alice@example.com")],
        "requested_at": before["request"]["requested_at"],
        "regulation": "gdpr",
        "kind": "erase",
    }
    assert after["request"]["subject_hash"] == read_receipt(setup.out, "req-a")["subject_hash"]
    assert [e["status"] for e in after["timeline"]][-1] == "verified"
    assert "alice" not in text


API_TOKEN = "purge-test-token"


def test_erasure_api_500_then_200_ends_verified(setup, monkeypatch):
    monkeypatch.setenv("RTBF_ERASURE_API_TOKEN", API_TOKEN)
    with ErasureApiServer(API_TOKEN, {"req-a": [500]}) as api:
        assert setup.purge(f"--erasure_api_url={api.url}", "--erasure_api_action=anonymize") == 0
        calls, erased = api.calls, api.erased
    assert sorted((c.body["request_id"], c.status) for c in calls) == [
        ("req-a", 200), ("req-a", 500), ("req-b", 200), ("req-c", 200)
    ]  # fmt: skip
    assert {tuple(b["subject_ids"]) for b in erased.values()} == set(FORGOTTEN.values())
    assert {b["action"] for b in erased.values()} == {"anonymize"}
    receipt = read_receipt(setup.out, "req-a")
    assert receipt["status"] == "verified"
    [api_location] = [loc for loc in receipt["locations"] if loc["kind"] == "api"]
    assert api_location["location"] == f"api:{api.url}"
    assert (api_location["status"], api_location["http_status"], api_location["attempts"]) == ("done", 200, 2)
    assert _timeline(setup.registry, "req-a") == ["received", "suppressed", "purged", "verified"]
    assert not (setup.out / "deadletter" / "erasure_api").exists()


def test_erasure_api_permanent_failure_dead_letters_and_keeps_the_request_open(setup, monkeypatch, capsys):
    monkeypatch.setenv("RTBF_ERASURE_API_TOKEN", API_TOKEN)
    with ErasureApiServer(API_TOKEN, {"req-b": [403]}) as api:
        assert setup.purge(f"--erasure_api_url={api.url}") == 1
        assert "incomplete: req-b" in capsys.readouterr().out

        receipt = read_receipt(setup.out, "req-b")
        assert receipt["status"] == "incomplete" and receipt["completed_at"] is None
        [failed] = [loc for loc in receipt["locations"] if loc["kind"] == "api"]
        assert (failed["status"], failed["http_status"], failed["attempts"]) == ("failed", 403, 1)
        assert failed["reason"].startswith("permanent: HTTP 403")
        [letter] = [
            json.loads(line) for p in (setup.out / "deadletter" / "erasure_api").glob("*.jsonl")
            for line in p.read_text().splitlines()
        ]  # fmt: skip
        assert (letter["request_id"], letter["http_status"], letter["verified"]) == ("req-b", 403, False)
        assert _timeline(setup.registry, "req-b")[-1] == "purge_incomplete"
        assert manifest(setup.out, "req-b")["subject_ids"] == ["bob"]  # open: not redacted
        assert main(["status", f"--registry={setup.registry}"]) == 0
        status_out = capsys.readouterr().out
        assert status_out.count("\n") == 1 and "req-b\tgdpr\tpurge_incomplete" in status_out
        # The files were purged all the same; only the API is owed.
        assert archive_counts(setup.out) == setup.expected_after
        assert all(read_receipt(setup.out, r)["status"] == "verified" for r in ("req-a", "req-c"))

        # The API recovers: a re-run calls it for req-b only, with the same key, and closes the request.
        assert setup.purge(f"--erasure_api_url={api.url}") == 0
        b_calls = [c for c in api.calls if c.body["request_id"] == "req-b"]
        assert [c.status for c in b_calls] == [403, 200] and len({c.headers["Idempotency-Key"] for c in b_calls}) == 1
        assert len(api.calls) == 4
    receipt = read_receipt(setup.out, "req-b")
    assert receipt["status"] == "verified"
    assert receipt["records_removed"]["archive_partition"] == setup.subject_records["req-b"]  # from the journal
    assert _timeline(setup.registry, "req-b")[-2:] == ["purged", "verified"]
    assert files_mentioning(setup.out, ALL_IDS) == {}


def test_an_api_echoing_the_request_headers_never_gets_the_token_into_a_file_or_a_log(
    setup, monkeypatch, capsys, caplog
):
    secret = "tok-Zq81-very-secret-value"
    monkeypatch.setenv("RTBF_ERASURE_API_TOKEN", secret)
    caplog.set_level("DEBUG")
    with ErasureApiServer(secret, {"req-a": [500], "req-b": [403]}, echo_headers=True) as api:
        assert setup.purge(f"--erasure_api_url={api.url}", "-v") == 1
        assert [c.status for c in api.calls if c.body["request_id"] == "req-b"] == [403]
    printed = capsys.readouterr()
    receipt = read_receipt(setup.out, "req-b")
    [failed] = [loc for loc in receipt["locations"] if loc["kind"] == "api"]
    # The API's echo is kept (redacted): the reader sees that the API answered with its headers.
    assert failed["reason"].startswith('permanent: HTTP 403: {"status": 403, "error": "scripted failure", ')
    assert '"debug": "token *** Authorization=***", "request_headers": {' in failed["reason"]
    [letter] = [
        json.loads(line) for p in (setup.out / "deadletter" / "erasure_api").glob("*.jsonl")
        for line in p.read_text().splitlines()
    ]  # fmt: skip
    assert letter["reason"] == failed["reason"]
    leaks = [
        str(p) for root in (setup.root, setup.out) for p in root.rglob("*")
        if p.is_file() and secret.encode() in p.read_bytes()
    ]  # fmt: skip
    assert leaks == []
    assert secret not in printed.out + printed.err + caplog.text
    assert read_receipt(setup.out, "req-a")["status"] == "verified"


def test_erasure_api_needs_https_and_a_token(setup, monkeypatch, capsys):
    monkeypatch.delenv("RTBF_ERASURE_API_TOKEN", raising=False)
    assert setup.purge("--erasure_api_url=http://crm.example.com/erase") == 2
    err = capsys.readouterr().err
    assert "must use https" in err and "RTBF_ERASURE_API_TOKEN" in err
    assert archive_counts(setup.out) == setup.counts_before
