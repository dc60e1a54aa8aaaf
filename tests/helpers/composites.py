"""Inputs and readers for the composite tests (each composite run alone with TestPipeline)."""

from __future__ import annotations

import json

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics.metric import MetricsFilter

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.records import SESSION_SCHEMA, RawBatch

__all__ = ["session_rows", "jsonl_chunk", "user_ids", "rows_of", "rtbf_counters"]


def session_rows(rows: list[tuple], action_type: str = "view", device: str = "iPhone") -> pa.RecordBatch:
    """A session batch from (user_id, event_time_ms) or (user_id, event_time_ms, email) tuples."""
    return pa.RecordBatch.from_pylist(
        [
            {
                "user_id": row[0],
                "event_time_ms": row[1],
                "action": "show",
                "action_type": action_type,
                "action_detail": None,
                "device_type": device,
                "secs_elapsed": 10.0,
                "event_id": f"{row[0]}-{row[1]}",
                "email": row[2] if len(row) > 2 else None,
                "device_id": None,
            }
            for row in rows
        ],
        schema=SESSION_SCHEMA,
    )


def jsonl_chunk(lines: list[dict | str], source: str = "test://sessions.jsonl") -> RawBatch:
    """A raw JSON-lines chunk at byte offset 0; a ``str`` line is taken verbatim (to make bad ones)."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    return RawBatch(source, "jsonl", text.encode(), 0, None, 0)


def user_ids(batch: pa.RecordBatch) -> list[str]:
    return batch.column("user_id").to_pylist()


def rows_of(table: pa.Table | pa.RecordBatch, *columns: str) -> list[tuple]:
    """The rows of ``table`` as tuples of ``columns``, in table order."""
    return list(zip(*(table.column(name).to_pylist() for name in columns)))


def rtbf_counters(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """The run's ``rtbf`` counters by name (attempted values: the test runners commit them all)."""
    query = result.metrics().query(MetricsFilter().with_namespace(rtbf_metrics.NAMESPACE))
    totals: dict[str, int] = {}
    for counter in query["counters"]:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(counter.attempted or 0)
    return totals
