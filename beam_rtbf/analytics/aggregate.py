"""Fixed event-time windows: sessions, distinct users and mean ``secs_elapsed``
per (action_type, device_type) -- the first seed's metric.

Each batch is pre-aggregated per (window, action_type, device_type, user) with
Arrow's group-by, split by window and timestamped inside it; Beam's windowing
and GroupByKey then merge the partials, so windows close on the watermark in
streaming and exactly once at the end in bounded runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Duration, Timestamp

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.records import iso_ms
from beam_rtbf.sinks.files import join, json_lines, unique_part, write_bytes_atomically

__all__ = ["WindowedAggregates", "WriteAnalytics", "partial_aggregates", "merge_partials"]

_KEYS = ["action_type", "device_type"]


def partial_aggregates(batch: pa.RecordBatch, window_ms: int) -> Iterator[tuple[int, pa.Table]]:
    """(window_start_ms, per-user partial table) for each window the batch touches."""
    times = batch.column("event_time_ms").to_numpy()
    starts = (times // window_ms) * window_ms
    table = pa.table(
        {
            "window_start": pa.array(starts),
            "action_type": batch.column("action_type"),
            "device_type": batch.column("device_type"),
            "user_id": batch.column("user_id"),
            "secs_elapsed": batch.column("secs_elapsed"),
        }
    )
    grouped = table.group_by(["window_start", *_KEYS, "user_id"], use_threads=False).aggregate(
        [("secs_elapsed", "sum"), ("secs_elapsed", "count"), ("user_id", "count")]
    )
    grouped = grouped.sort_by("window_start")
    ws = grouped.column("window_start").to_numpy()
    cuts = np.flatnonzero(np.diff(ws)) + 1
    bounds = [0, *cuts.tolist(), len(ws)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        yield int(ws[lo]), grouped.slice(lo, hi - lo).drop_columns(["window_start"])


def merge_partials(partials: list[pa.Table]) -> pa.Table:
    """One window's partials -> sessions, distinct_users, avg_secs_elapsed per key."""
    table = pa.concat_tables(partials)
    per_user = table.group_by([*_KEYS, "user_id"], use_threads=False).aggregate(
        [("secs_elapsed_sum", "sum"), ("secs_elapsed_count", "sum"), ("user_id_count", "sum")]
    )
    per_key = per_user.group_by(_KEYS, use_threads=False).aggregate(
        [("user_id_count_sum", "sum"), ("user_id", "count"),
         ("secs_elapsed_sum_sum", "sum"), ("secs_elapsed_count_sum", "sum")]
    )
    secs_count = per_key.column("secs_elapsed_count_sum_sum")
    avg = pc.if_else(
        pc.greater(secs_count, 0),
        pc.divide(per_key.column("secs_elapsed_sum_sum_sum"), pc.cast(secs_count, pa.float64())),
        pa.scalar(None, pa.float64()),
    )
    return pa.table(
        {
            "action_type": per_key.column("action_type"),
            "device_type": per_key.column("device_type"),
            "sessions": per_key.column("user_id_count_sum_sum"),
            "distinct_users": per_key.column("user_id_count"),
            "avg_secs_elapsed": avg,
        }
    ).sort_by([("action_type", "ascending"), ("device_type", "ascending")])


class _PartialFn(beam.DoFn):
    def __init__(self, window_ms: int) -> None:
        self._window_ms = window_ms

    def process(self, batch: pa.RecordBatch):
        for start, partial in partial_aggregates(batch, self._window_ms):
            # The last millisecond of the window: inside it, and never before any row it holds.
            ts = Timestamp(micros=(start + self._window_ms - 1) * 1000)
            yield window.TimestampedValue((start, partial), ts)


class _MergeFn(beam.DoFn):
    def process(self, element, win=beam.DoFn.WindowParam):
        start, partials = element
        merged = merge_partials(list(partials))
        end = start + int(round((win.end - win.start) * 1000))
        yield [{"window_start": iso_ms(start), "window_end": iso_ms(end), **row} for row in merged.to_pylist()]


class WindowedAggregates(beam.PTransform):
    """Clean session batches -> one list of rows per window pane, a row per (action_type, device_type)."""

    def __init__(self, window_s: int, allowed_lateness_s: int = 0) -> None:
        super().__init__()
        if window_s < 1:
            raise ValueError("window_s must be >= 1")
        self._window_s = window_s
        self._allowed_lateness_s = allowed_lateness_s

    def expand(self, clean):
        return (
            clean
            | "PartialAggregates" >> beam.ParDo(_PartialFn(self._window_s * 1000))
            | "FixedWindows" >> beam.WindowInto(
                window.FixedWindows(self._window_s),
                allowed_lateness=Duration(seconds=self._allowed_lateness_s),
            )
            | "GroupWindow" >> beam.GroupByKey()
            | "MergeWindow" >> beam.ParDo(_MergeFn())
        )


class _WriteAnalyticsFn(beam.DoFn):
    """One JSON-lines file per window pane: ``analytics/window_start=.../pane-*.jsonl``."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._rows = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.ANALYTICS_ROWS)

    def process(self, rows: list[dict]):
        folder = join(self._directory, f"window_start={rows[0]['window_start']}")
        path = join(folder, unique_part("pane", ".jsonl"))
        write_bytes_atomically(path, json_lines(rows))
        self._rows.inc(len(rows))
        yield path


class WriteAnalytics(beam.PTransform):
    """Window panes of aggregate rows -> JSON-lines files, one per pane."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self._directory = directory

    def expand(self, panes):
        return panes | "WriteAnalyticsFiles" >> beam.ParDo(_WriteAnalyticsFn(self._directory))
