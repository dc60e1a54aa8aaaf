"""Trust (DESIGN.md): the registry decides what is purged, stored paths do not depend on the working
directory, request ids never become file names, identifiers are compared in one canonical form.

Every test goes through the CLI on real files, then reads back what is on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import unicodedata
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_rtbf.cli import main
from beam_rtbf.manifests.build import manifest_path
from beam_rtbf.purge.receipts import receipt_path
from beam_rtbf.registry import open_registry
from tests.adversarial import HOSTILE_REQUEST_IDS, SPELLINGS

pytestmark = [pytest.mark.slow]

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
# These archives are tiny: a subject is a large share of them, which the blast-radius guard would stop.
GUARD = ["--max_total_share=1", "--max_partition_share=1"]


def _session(user: str, k: int, **extra: str) -> dict:
    return {
        "user_id": user,
        "event_time": T0 + k * 1000,
        "action": "show",
        "action_type": "view",
        "device_type": "iPhone",
        "secs_elapsed": 1.0,
        **extra,
    }


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"file://{path}"


def _archive_users(archive: Path) -> list[str]:
    users = []
    for path in sorted(archive.glob("dt=*/**/*.parquet")):
        users += pq.read_table(path, columns=["user_id"]).column("user_id").to_pylist()
    return sorted(users)


def _every_file_text(root: Path) -> str:
    chunks = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "_state" not in p.parts):
        if path.suffix == ".parquet":
            chunks.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
        else:
            chunks.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(chunks)


@pytest.fixture(autouse=True)
def _hash_key(monkeypatch):
    monkeypatch.setenv("RTBF_SUBJECT_HASH_KEY", "test-key")


def _history(tmp_path: Path, users: list[str], per_user: int = 3) -> tuple[str, str]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    rows = [_session(u, i * per_user + k) for i, u in enumerate(users) for k in range(per_user)]
    return _write_jsonl(data / "sessions.jsonl", rows), _write_jsonl(data / "none.jsonl", [])


def test_purge_from_another_directory_after_the_output_moved(tmp_path, monkeypatch):
    users = [f"user-{i}" for i in range(20)]
    sessions, no_requests = _history(tmp_path, users)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    # A relative --output and the default registry (under the output): nothing is left in the cwd.
    assert main(["run", "--output=out", f"--sessions={sessions}", f"--requests={no_requests}"]) == 0
    assert sorted(os.listdir(workdir)) == ["out"]
    index = pq.read_table(next((workdir / "out" / "archive" / "_index").glob("*.parquet")))
    for stored in index.column("path").to_pylist():
        assert stored.startswith("dt=") and (workdir / "out" / "archive" / stored).is_file()
    assert main(["forget", "user-3", "--request-id=r-3", "--output=out"]) == 0

    moved = tmp_path / "elsewhere" / "moved-out"
    moved.parent.mkdir()
    shutil.move(str(workdir / "out"), moved)
    monkeypatch.chdir(tmp_path)  # yet another directory
    assert main(["purge", f"--output={moved}", *GUARD]) == 0
    assert _archive_users(moved / "archive") == sorted(u for u in users if u != "user-3" for _ in range(3))
    receipt = json.loads(Path(receipt_path(str(moved / "receipts"), "r-3")).read_text())
    assert receipt["status"] == "verified" and receipt["records_removed"]["archive_partition"] == 3
    for location in receipt["locations"]:
        if "path" in location:
            assert not location["path"].startswith("/"), location  # relative to its root
    assert '"user-3"' not in _every_file_text(moved)


def test_forget_without_a_run_is_purged_from_the_registry(tmp_path, capsys):
    """A request that never came through a requests stream has no manifest: the purge builds one."""
    sessions, no_requests = _history(tmp_path, ["alice", "bob", "carol"])
    out = tmp_path / "out"
    assert main(["run", f"--output={out}", f"--sessions={sessions}", f"--requests={no_requests}"]) == 0
    assert not list((out / "manifests").glob("*.json")) if (out / "manifests").exists() else True
    assert main(["forget", "bob", "--request-id=cli-bob", f"--output={out}"]) == 0
    capsys.readouterr()
    assert main(["purge", f"--output={out}", *GUARD]) == 0
    assert _archive_users(out / "archive") == ["alice"] * 3 + ["carol"] * 3
    written = json.loads(Path(manifest_path(str(out / "manifests"), "cli-bob")).read_text())
    assert written["status"] == "verified" and "subject_ids" not in written  # redacted once verified
    capsys.readouterr()
    assert main(["status", "cli-bob", f"--output={out}"]) == 0
    timeline = [e["status"] for e in json.loads(capsys.readouterr().out)["timeline"]]
    assert timeline[0] == "received" and timeline[-2:] == ["purged", "verified"]
    # Nothing is pending any more: a second purge changes nothing and says so.
    assert main(["purge", f"--output={out}", *GUARD]) == 0
    assert "requests_pending          0" in capsys.readouterr().out


def test_hostile_request_ids_stay_inside_manifests_and_are_all_purged(tmp_path):
    users = [f"victim-{i}" for i in range(len(HOSTILE_REQUEST_IDS))] + ["keeper"]
    sessions, _ = _history(tmp_path, users)
    requests = tmp_path / "data" / "requests.jsonl"
    _write_jsonl(
        requests,
        [
            {"request_id": rid, "subject_id": f"victim-{i}", "requested_at": T0}
            for i, rid in enumerate(HOSTILE_REQUEST_IDS)
        ],
    )
    out = tmp_path / "deep" / "out"
    assert main(["run", f"--output={out}", f"--sessions={sessions}", f"--requests=file://{requests}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests_accepted"] == summary["manifests_written"] == len(HOSTILE_REQUEST_IDS)
    # Every manifest is a plain file directly in manifests/; nothing was written outside the output.
    manifests = sorted((out / "manifests").iterdir())
    assert len(manifests) == len(HOSTILE_REQUEST_IDS)
    assert all(p.is_file() and not p.name.startswith(".") for p in manifests)
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["out"]
    assert not (tmp_path / "x").exists() and not Path("/tmp/rtbf-abs-escape.json").exists()
    # History of the victims (archived by an earlier run) is purged for every id.
    history = tmp_path / "history"
    history.mkdir()
    assert main(["run", f"--output={history}", f"--sessions={sessions}", f"--requests=file://{requests}"]) == 0
    assert _archive_users(history / "archive") == ["keeper"] * 3
    assert main(["purge", f"--output={out}", *GUARD]) == 0
    with open_registry(f"embedded://{out / '_state' / 'registry.sqlite'}") as registry:
        for rid in HOSTILE_REQUEST_IDS:
            assert registry.timeline(rid)[-1].status == "verified", rid


def test_same_request_id_for_another_subject_is_a_conflict(tmp_path, capsys):
    sessions, _ = _history(tmp_path, ["ann", "ben", "cat"])
    requests = tmp_path / "data" / "requests.jsonl"
    _write_jsonl(
        requests,
        [
            {"request_id": "r-1", "subject_id": "ann", "requested_at": T0},
            {"request_id": "r-1", "subject_id": "ann", "requested_at": T0 + 5},  # a retry: duplicate
            {"request_id": "r-1", "subject_id": "ben", "requested_at": T0},  # another subject: conflict
        ],
    )
    out = tmp_path / "out"
    assert main(["run", f"--output={out}", f"--sessions={sessions}", f"--requests=file://{requests}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["requests_in"], summary["requests_accepted"]) == (3, 1)
    assert (summary["requests_duplicate"], summary["requests_dead_lettered"]) == (1, 1)
    letters = [json.loads(line) for p in (out / "deadletter").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert len(letters) == 1 and "already registered for a different subject" in letters[0]["reason"]
    assert json.loads(letters[0]["raw"])["subject_id"] == "ben"
    # ben was not forgotten by a conflicting request: his sessions are clean.
    assert _archive_users(out / "archive") == ["ben"] * 3 + ["cat"] * 3
    capsys.readouterr()
    assert main(["forget", "cat", "--request-id=r-1", f"--output={out}"]) == 2
    err = capsys.readouterr().err
    assert "already registered for a different subject" in err and "ann" not in err
    assert main(["forget", "ann", "--request-id=r-1", f"--output={out}"]) == 0  # the same subject: duplicate


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_one_canonical_identifier_form_at_filter_index_and_purge(tmp_path, spelling):
    canonical, variants = SPELLINGS[spelling]
    data = tmp_path / "data"
    data.mkdir()
    # History: each variant spelling of the subject, as user id and as e-mail, plus a bystander.
    rows = [_session(v, k) for k, v in enumerate(variants)]
    rows += [_session("guest", 100 + k, email=v) for k, v in enumerate(variants) if "@" in canonical]
    rows += [_session("bystander", 200)]
    history = _write_jsonl(data / "history.jsonl", rows)
    fresh = _write_jsonl(data / "fresh.jsonl", [_session(v, 300 + k) for k, v in enumerate(variants)])
    none = _write_jsonl(data / "none.jsonl", [])
    requests = _write_jsonl(
        data / "requests.jsonl", [{"request_id": "r", "subject_id": variants[-1], "requested_at": T0}]
    )
    out = tmp_path / "out"
    assert main(["run", f"--output={out}", f"--sessions={history}", f"--requests={none}"]) == 0
    archived = set(_archive_users(out / "archive"))
    assert canonical in archived and not (set(variants) - {canonical}) & archived  # stored canonically
    # The request, in yet another spelling, stops every spelling at the filter...
    assert main(["run", f"--output={out}", f"--sessions={fresh}", f"--requests={requests}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["suppressed"], summary["clean"]) == (len(variants), 0)
    # ...and the purge finds all of history under the canonical form.
    assert main(["purge", f"--output={out}", *GUARD]) == 0
    assert set(_archive_users(out / "archive")) <= {"bystander", "guest"}
    text = _every_file_text(out / "archive")
    assert f'"{canonical}"' not in text
    assert unicodedata.normalize("NFC", canonical) == canonical


def test_real_sessions_without_requests_accept_no_made_up_requests(tmp_path):
    """Generated requests come only with the generated default sessions, never into a real registry."""
    sessions, _ = _history(tmp_path, ["u0000001", "u0000002"])
    out = tmp_path / "out"
    assert main(["run", f"--output={out}", f"--sessions={sessions}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["requests_in"], summary["requests_accepted"], summary["clean"]) == (0, 0, 6)
    with open_registry(f"embedded://{out / '_state' / 'registry.sqlite'}") as registry:
        assert registry.size() == 0 and registry.requests() == []
