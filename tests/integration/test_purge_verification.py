"""``verified`` is a fact: an independent scan of every stored file, not the plan's list, found nothing.

Each test runs ``beam-rtbf purge`` through the CLI on a real run directory and adds
what the subject index cannot know about: unindexed files, leftovers of a crashed
run, a file the purge cannot rewrite, a corrupt file, and dead letters that merely
contain a subject's id as a token.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from beam_rtbf.archive.idfilter import read_filter
from beam_rtbf.archive.write import INDEX_ID_COLUMNS, write_data_file
from beam_rtbf.purge import pipeline as purge_pipeline
from beam_rtbf.registry import open_registry
from tests.helpers.purge_setup import ALL_IDS, FORGOTTEN, build, files_mentioning, manifest, read_receipt

pytestmark = [pytest.mark.slow]


def _last_status(registry_url: str, request_id: str) -> str:
    with open_registry(registry_url) as registry:
        return registry.timeline(request_id)[-1].status


def _hour_file(out: Path, hour: int) -> Path:
    [path] = sorted((out / "archive").glob(f"dt=2026-01-01/hour={hour:02d}/part-*.parquet"))
    return path


def _copy_rows(source: Path, target: Path, users: set[str]) -> int:
    """Copy the rows of ``users`` from one archive file into a file the index does not know."""
    table = pq.read_table(source)
    rows = table.filter(pc.is_in(table.column("user_id"), value_set=pc.cast(list(users), "string")))
    pq.write_table(rows, target)
    return rows.num_rows


def _on_disk(out: Path) -> dict[str, int]:
    """What a scan of every stored file must have read: files by kind, rows and bytes."""
    counts = {"archive_files": 0, "index_files": 0, "other_files": 0, "deadletter_files": 0, "rows": 0, "bytes": 0}
    for folder, _, names in os.walk(out / "archive"):
        for name in names:
            path = Path(folder) / name
            counts["bytes"] += path.stat().st_size
            if not name.endswith(".parquet"):  # read as text, line by line
                counts["other_files"] += 1
                counts["rows"] += sum(1 for line in path.read_bytes().split(b"\n") if line.strip())
                continue
            counts["index_files" if "/_index/" in str(path) else "archive_files"] += 1
            counts["rows"] += pq.read_metadata(path).num_rows
    for path in (out / "deadletter").iterdir():
        if path.is_file() and path.name.endswith(".jsonl"):
            counts["deadletter_files"] += 1
            counts["bytes"] += path.stat().st_size
            counts["rows"] += sum(1 for line in path.read_bytes().split(b"\n") if line.strip())
    return counts


def test_unindexed_files_and_crash_leftovers_are_purged_and_every_file_is_scanned(setup, capsys):
    unindexed = _hour_file(setup.out, 0).parent / "part-unindexed.parquet"
    leftover = _hour_file(setup.out, 1).parent / ".tmp-0123abcd-part.parquet"
    assert _copy_rows(_hour_file(setup.out, 0), unindexed, {"bob", "user-05"}) == 4 + 5
    assert _copy_rows(_hour_file(setup.out, 1), leftover, {"bob", "alice", "user-06"}) == 4 + 4 + 5

    # 29 + 12 of 629 + 22 records: over the default 5% cap, which counts the unindexed files too.
    assert setup.purge() == 3
    assert "archive: would remove 41 of 651 records" in capsys.readouterr().out
    assert setup.purge("--max_total_share=0.1") == 0
    assert "verified                  3" in capsys.readouterr().out
    # The plan found both files by listing the archive and rewrote them: everyone else's rows stay.
    assert pq.read_table(unindexed).column("user_id").to_pylist() == ["user-05"] * 5
    assert pq.read_table(leftover).column("user_id").to_pylist() == ["user-06"] * 5
    assert files_mentioning(setup.out, ALL_IDS) == {}
    receipts = {r: read_receipt(setup.out, r) for r in FORGOTTEN}
    assert receipts["req-b"]["records_removed"]["archive_partition"] == setup.subject_records["req-b"] + 4 + 4
    assert receipts["req-a"]["records_removed"]["archive_partition"] == setup.subject_records["req-a"] + 4
    disk = _on_disk(setup.out)
    assert disk["archive_files"] == 5 and disk["index_files"] >= 1 and disk["other_files"] == 0
    for request_id, receipt in receipts.items():
        assert receipt["status"] == "verified", request_id
        checked = receipt["verification"]
        assert checked["scanned"] == disk
        # Every Parquet file is the archive writer's or was rewritten by the purge: proven by its footer,
        # but for the identifier filter's rare false positives (~1% a file and identifier).
        proven = checked["by_file_metadata"]["files"]
        assert disk["archive_files"] + disk["index_files"] - 2 <= proven <= disk["archive_files"] + disk["index_files"]
        assert (checked["found"], checked["found_in"], checked["unreadable"], checked["passed"]) == (0, [], [], True)
        assert "every file under the archive root" in checked["method"]


@pytest.mark.parametrize("writer", ["pyarrow", "archive"])
def test_verification_does_not_trust_the_plan(setup, monkeypatch, capsys, writer):
    """A plan that misses a file (a bug, a stale listing) cannot produce a verified receipt, whether
    the file was written by another tool (no identifier filter: read) or by the archive writer (its
    footer's filter names bob as possible: read)."""
    unindexed = _hour_file(setup.out, 2).parent / "part-unindexed.parquet"
    _copy_rows(_hour_file(setup.out, 2), unindexed, {"bob", "user-07"})
    if writer == "archive":
        write_data_file(str(unindexed), pq.read_table(unindexed))
        assert read_filter(pq.read_metadata(unindexed), INDEX_ID_COLUMNS)[0] is not None
    real_plan = purge_pipeline.plan_purge

    def blind_plan(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        return dataclasses.replace(plan, tasks=tuple(t for t in plan.tasks if t.path != str(unindexed)))

    monkeypatch.setattr(purge_pipeline, "plan_purge", blind_plan)
    assert setup.purge() == 1
    out = capsys.readouterr().out
    assert "incomplete: req-b" in out and "verified                  2" in out
    assert "verification_scan" in out and "4 subject records found" in out
    receipt = read_receipt(setup.out, "req-b")
    assert receipt["status"] == "incomplete" and receipt["completed_at"] is None
    assert receipt["verification"]["found"] == 4
    assert receipt["verification"]["found_in"] == [
        {
            "path": str(unindexed.relative_to(setup.out / "archive")),
            "kind": "archive",
            "records": 4,
            "matched_by": {"field": 4},
        }
    ]
    assert _last_status(setup.registry, "req-b") == "purge_incomplete"
    assert manifest(setup.out, "req-b")["subject_ids"] == ["bob"]
    for request_id in ("req-a", "req-c"):
        assert read_receipt(setup.out, request_id)["status"] == "verified"


def test_a_file_the_purge_cannot_rewrite_keeps_the_request_open(setup, capsys):
    export = setup.out / "archive" / "exports" / "notes.txt"
    export.parent.mkdir()
    export.write_text("hand export\nsessions of bob, 2026-01-01\n")
    assert setup.purge() == 1
    assert "incomplete: req-b" in capsys.readouterr().out
    assert export.read_text() == "hand export\nsessions of bob, 2026-01-01\n"  # left alone, and said so
    checked = read_receipt(setup.out, "req-b")["verification"]
    assert (read_receipt(setup.out, "req-b")["status"], checked["found"]) == ("incomplete", 1)
    assert checked["found_in"] == [
        {
            "path": str(export.relative_to(setup.out / "archive")),
            "kind": "other",
            "records": 1,
            "matched_by": {"raw_token": 1},
        }
    ]
    assert checked["scanned"] == _on_disk(setup.out) and checked["scanned"]["other_files"] == 1
    assert [read_receipt(setup.out, r)["status"] for r in ("req-a", "req-c")] == ["verified", "verified"]


def test_corrupt_parquet_anywhere_under_the_archive_leaves_every_request_incomplete(setup, capsys):
    corrupt = _hour_file(setup.out, 2).parent / "part-corrupt.parquet"  # no index names it
    corrupt.write_bytes(b"PAR1 this is not parquet")
    assert setup.purge() == 1
    out = capsys.readouterr().out
    assert f"unreadable: {corrupt}" in out
    assert all(f"incomplete: {r}" in out for r in FORGOTTEN)
    assert corrupt.read_bytes() == b"PAR1 this is not parquet"
    for request_id in FORGOTTEN:
        receipt = read_receipt(setup.out, request_id)
        assert receipt["status"] == "incomplete"
        [bad] = receipt["verification"]["unreadable"]
        assert (bad["path"], bad["kind"]) == (
            str(corrupt.relative_to(setup.out / "archive")),
            "archive",
        )  # relative to its root
        assert bad["reason"].startswith(f"{corrupt}: not a readable Parquet file")
        assert receipt["verification"]["found"] == 0 and receipt["verification"]["passed"] is False
        assert _last_status(setup.registry, request_id) == "purge_incomplete"
    # Everything readable was purged all the same.
    readable = [p for p in (setup.out / "archive").glob("dt=*/hour=*/*.parquet") if p != corrupt]
    assert len(readable) == 3
    for path in readable:
        assert not set(pq.read_table(path).column("user_id").to_pylist()) & {"alice", "bob", "carol"}


DEAD_SUBJECT = b'{"user_id": "42", "event_time": "not-a-time"}'
DEAD_OTHER = b'{"user_id": "u9", "secs_elapsed": 42, "event_time": "not-a-time"}'
DEAD_UNPARSEABLE = b"this is not a record 42"


def test_dead_letters_go_by_their_record_and_raw_tokens_only_when_unparseable(tmp_path, registry_url, monkeypatch):
    monkeypatch.setenv("RTBF_SUBJECT_HASH_KEY", "test-key")
    monkeypatch.chdir(tmp_path)
    setup = build(
        tmp_path / "a",
        registry_url,
        forgotten={"req-42": ("42",)},
        bad_lines=[DEAD_SUBJECT, DEAD_OTHER, DEAD_UNPARSEABLE],
    )

    def dead_raw() -> list[str]:
        lines = [
            json.loads(line)["raw"]
            for path in sorted((setup.out / "deadletter").glob("*.jsonl"))
            for line in path.read_bytes().splitlines()
            if line.strip()
        ]
        return sorted(lines)

    assert dead_raw() == sorted(line.decode() for line in (DEAD_SUBJECT, DEAD_OTHER, DEAD_UNPARSEABLE))
    assert setup.purge() == 0
    assert dead_raw() == [DEAD_OTHER.decode()]  # u9's dead letter stays, although it holds the token 42
    receipt = read_receipt(setup.out, "req-42")
    assert receipt["status"] == "verified"
    assert receipt["records_removed"]["deadletter"] == 2
    dead = [loc for loc in receipt["locations"] if loc["kind"] == "deadletter"]
    matched = {how: sum(loc["matched_by"][how] for loc in dead) for how in ("field", "raw_token")}
    assert matched == {"field": 1, "raw_token": 1}
    # The independent scan applies the same rule: u9's letter does not count against subject 42.
    assert receipt["verification"]["found"] == 0
    assert receipt["verification"]["scanned"]["deadletter_files"] == len(dead) >= 1
