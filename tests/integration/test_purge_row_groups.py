"""``beam-rtbf purge`` on archive files of several row groups: only the groups holding the subject
are re-encoded, the others keep their bytes, and everything else a purge proves still holds."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_rtbf.archive.write import DATA_ROW_GROUP_ROWS
from beam_rtbf.cli import main
from tests.helpers.crash_purge import crash_purge_command
from tests.helpers.purge_setup import HOUR, T0, archive_table, files_mentioning, read_receipt

pytestmark = [pytest.mark.slow]

USERS = 4_000
PER_USER = 5  # 20,000 sessions in one hour: three row groups of at most 8,192
SUBJECT, ALIAS = "alice", "alice@example.org"


def _sessions(path: Path) -> list[dict]:
    rows = []
    for k in range(USERS * PER_USER):
        rows.append(
            {
                "user_id": f"user-{k % USERS:05d}",
                "event_id": f"e-{k:06d}",
                "event_time_ms": T0 + k * 150,  # in event time order: the file keeps it
                "action": "view",
                "action_type": "click",
                "action_detail": "x",
                "device_type": "web",
                "secs_elapsed": float(k % 97),
            }
        )
    # The subject: two sessions in the second group (of three), one more by an alias.
    rows[9_000] = rows[9_000] | {"user_id": SUBJECT}
    rows[9_001] = rows[9_001] | {"user_id": SUBJECT}
    rows[12_000] = rows[12_000] | {"email": ALIAS}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _group_spans(path: Path) -> list[tuple[int, int, int]]:
    """(rows, first byte, last byte) of each row group."""
    metadata = pq.read_metadata(path)
    spans = []
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        columns = [group.column(j) for j in range(group.num_columns)]
        starts = [c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset for c in columns]
        spans.append((group.num_rows, min(starts), max(s + c.total_compressed_size for s, c in zip(starts, columns))))
    return spans


def _history(tmp_path: Path, registry_url: str) -> tuple[Path, list[dict], Path]:
    """A run directory whose one hourly file (3 row groups) holds the subject; the request accepted."""
    out, data = tmp_path / "out", tmp_path / "data"
    data.mkdir()
    rows = _sessions(data / "sessions.jsonl")
    (data / "requests.jsonl").write_text(
        json.dumps({"request_id": "req-a", "subject_id": SUBJECT, "aliases": [ALIAS], "requested_at": T0 + 4 * HOUR})
        + "\n"
    )
    (data / "empty.jsonl").write_text("")
    common = [f"--output={out}", f"--registry={registry_url}", "--archive_partition_s=3600", "--dedupe=off"]
    assert (
        main(["run", *common, f"--sessions=file://{data}/sessions.jsonl", f"--requests=file://{data}/empty.jsonl"]) == 0
    )
    assert (
        main(["run", *common, f"--sessions=file://{data}/empty.jsonl", f"--requests=file://{data}/requests.jsonl"]) == 0
    )
    (path,) = (out / "archive").glob("dt=*/hour=*/*.parquet")
    return out, rows, path


@pytest.mark.parametrize("point", ["before_replace:1", "after_replace:1"])
def test_a_purge_killed_around_a_spliced_replace_ends_as_one_clean_run(tmp_path, registry_url, monkeypatch, point):
    monkeypatch.setenv("RTBF_SUBJECT_HASH_KEY", "test-key")
    out, rows, path = _history(tmp_path, registry_url)
    argv, env = crash_purge_command(
        point,
        ["purge", f"--output={out}", f"--registry={registry_url}"],
        {**os.environ, "RTBF_SUBJECT_HASH_KEY": "test-key"},
    )
    crashed = subprocess.run(argv, env=env, capture_output=True, timeout=300)
    assert crashed.returncode == 86, crashed.stderr[-2000:]
    assert pq.read_metadata(path).num_rows in (20_000, 20_000 - 3)  # the old file or the new, never a mix
    assert main(["purge", f"--output={out}", f"--registry={registry_url}"]) == 0
    receipt = read_receipt(out, "req-a")
    assert receipt["status"] == "verified" and receipt["records_removed"]["archive_partition"] == 3
    assert files_mentioning(out, [SUBJECT, ALIAS]) == {}
    kept = [r["event_id"] for i, r in enumerate(rows) if i not in (9_000, 9_001, 12_000)]
    assert archive_table(out).sort_by("event_id").column("event_id").to_pylist() == kept
    assert [n for n, _, _ in _group_spans(path)] == [
        DATA_ROW_GROUP_ROWS,
        DATA_ROW_GROUP_ROWS - 3,
        20_000 - 2 * DATA_ROW_GROUP_ROWS,
    ]


@pytest.mark.parametrize("shape", ["one_step", "wide"])
def test_a_purge_rewrites_only_the_row_groups_holding_the_subject(tmp_path, registry_url, monkeypatch, shape):
    monkeypatch.setenv("RTBF_SUBJECT_HASH_KEY", "test-key")
    out, rows, path = _history(tmp_path, registry_url)
    before_bytes, before = path.read_bytes(), _group_spans(path)
    assert [n for n, _, _ in before] == [DATA_ROW_GROUP_ROWS, DATA_ROW_GROUP_ROWS, 20_000 - 2 * DATA_ROW_GROUP_ROWS]

    extra = ["--one_step_max_files=0"] if shape == "wide" else []
    assert main(["purge", f"--output={out}", f"--registry={registry_url}", *extra]) == 0

    receipt = read_receipt(out, "req-a")
    assert receipt["status"] == "verified" and receipt["records_removed"]["archive_partition"] == 3
    assert files_mentioning(out, [SUBJECT, ALIAS]) == {}
    kept = [r for i, r in enumerate(rows) if i not in (9_000, 9_001, 12_000)]
    table = archive_table(out).sort_by("event_id")
    assert table.column("event_id").to_pylist() == [r["event_id"] for r in kept]
    assert table.column("user_id").to_pylist() == [r["user_id"] for r in kept]
    assert table.column("secs_elapsed").to_pylist() == [r["secs_elapsed"] for r in kept]
    # The first and last groups were not touched: their bytes are as they were (the last moved only
    # if the re-encoded second grew); the second lost the subject's three rows.
    after = _group_spans(path)
    assert [n for n, _, _ in after] == [DATA_ROW_GROUP_ROWS, DATA_ROW_GROUP_ROWS - 3, 20_000 - 2 * DATA_ROW_GROUP_ROWS]
    now = path.read_bytes()
    assert after[0][1:] == before[0][1:]
    for (_, start, end), (_, new_start, new_end) in ((before[0], after[0]), (before[2], after[2])):
        assert now[new_start:new_end] == before_bytes[start:end]
