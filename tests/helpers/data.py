"""Small hand-made inputs and output readers shared by the pipeline tests."""

from __future__ import annotations

import glob
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from beam_rtbf.records import SESSION_SCHEMA, ErasureRequest, RawBatch
from beam_rtbf.sources.synthetic import request_lines

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def sessions(rows: list[tuple[str, int]], action_type: str = "view", device: str = "iPhone") -> pa.RecordBatch:
    """A batch of sessions from (user_id, event_time_ms) pairs; secs_elapsed = 10."""
    return pa.RecordBatch.from_pylist(
        [
            {
                "user_id": u,
                "event_time_ms": t,
                "action": "show",
                "action_type": action_type,
                "action_detail": None,
                "device_type": device,
                "secs_elapsed": 10.0,
                "event_id": f"{u}-{t}",
                "email": None,
                "device_id": None,
            }
            for u, t in rows
        ],
        schema=SESSION_SCHEMA,
    )


def request_batch(*requests: ErasureRequest) -> RawBatch:
    return RawBatch("test://requests", "jsonl", request_lines(list(requests)), 0, None, 0)


def archive_rows(output: str) -> pa.Table:
    files = sorted(glob.glob(os.path.join(output, "archive", "dt=*", "**", "*.parquet"), recursive=True))
    if not files:
        return SESSION_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f) for f in files])


def analytics_rows(output: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(output, "analytics", "**", "*.jsonl"), recursive=True)):
        with open(path, encoding="utf-8") as handle:
            rows.extend(json.loads(line) for line in handle)
    return rows


def manifests(output: str) -> dict[str, dict]:
    out = {}
    for path in sorted(glob.glob(os.path.join(output, "manifests", "*.json"))):
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        out[manifest["request_id"]] = manifest
    return out


def dead_letters(output: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(output, "deadletter", "*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            rows.extend(json.loads(line) for line in handle)
    return rows
