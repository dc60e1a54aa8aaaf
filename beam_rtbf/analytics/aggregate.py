"""Fixed event-time windows: sessions, distinct users and mean ``secs_elapsed``
per (action_type, device_type) -- the first seed's metric.

Sessions are pre-aggregated into mergeable partials (``partials.py``: sums per
(window, action_type, device_type), distinct (window, key, user) pairs) with Arrow's
group-by, split by bucket and timestamped inside it; Beam's windowing and GroupByKey
then merge the partials, so windows close on the watermark in streaming and exactly
once at the end in bounded runs (where a bundle's sessions make one partial per bucket).
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.analytics.partials import Partial, merge_partials, partial_aggregates
from beam_rtbf.sinks.files import join, run_write_dir, unique_part, write_bytes_atomically
from beam_rtbf.sinks.jsonl import to_json_lines
from beam_rtbf.sinks.stable import StableParDo, content_name, table_digest

__all__ = [
    "WindowedAggregates",
    "WriteAnalytics",
    "partial_aggregates",
    "merge_partials",
    "with_iso_windows",
    "file_rows",
    "ROW_COLUMNS",
]

# Bounded runs gather this many session rows of a bundle into one partial per bucket (the rows
# are the batches the archive writer holds too: no copy).
BOUNDED_GATHER_ROWS = 2_000_000

# The columns of an analytics row (files, and the PostgreSQL view). Merged panes also carry
# secs_elapsed_sum and secs_elapsed_count: a database that adds up several writers' parts of one
# window needs them for an exact mean; the files do not store them.
ROW_COLUMNS = (
    "window_start",
    "window_end",
    "action_type",
    "device_type",
    "sessions",
    "distinct_users",
    "avg_secs_elapsed",
)


class _PartialFn(beam.DoFn):
    """Sessions -> (bucket start, ``Partial``) timestamped in the bucket.

    ``gather_rows`` (bounded runs): the bundle's sessions are gathered (up to that many rows) and
    sent on as one partial per bucket, so what crosses the GroupByKey is one distinct pair per
    (window, key, user) of the bundle instead of one per batch. Streaming sends each batch's
    partials at once (panes close on the watermark)."""

    def __init__(self, window_ms: int, bucket_ms: int, gather_rows: int = 0) -> None:
        self._window_ms = window_ms
        self._bucket_ms = bucket_ms
        self._gather_rows = gather_rows

    def start_bundle(self) -> None:
        self._gathered: list[pa.RecordBatch] = []
        self._rows = 0

    def process(self, batch: pa.RecordBatch):
        if not self._gather_rows:
            yield from self._partials(batch)
            return
        self._gathered.append(batch)
        self._rows += batch.num_rows
        if self._rows >= self._gather_rows:
            yield from self._flush()

    def finish_bundle(self):
        yield from self._flush()

    def _flush(self):
        if not self._gathered:
            return
        table = pa.Table.from_batches(self._gathered)
        self._gathered, self._rows = [], 0
        for value in self._partials(table):
            yield WindowedValue(value.value, value.timestamp, (GlobalWindow(),))

    def _partials(self, sessions: pa.RecordBatch | pa.Table) -> Iterator[window.TimestampedValue]:
        for start, partial in partial_aggregates(sessions, self._window_ms, self._bucket_ms):
            # The bucket's last millisecond: inside it, and never before any row it holds.
            ts = Timestamp(micros=(start + self._bucket_ms - 1) * 1000)
            yield window.TimestampedValue((start, partial), ts)


class _MergeFn(beam.DoFn):
    def __init__(self, window_ms: int) -> None:
        self._window_ms = window_ms

    def process(self, element):
        _, partials = element
        yield with_iso_windows(merge_partials(list(partials)), self._window_ms)


def _iso(ms: pa.Array | pa.ChunkedArray) -> pa.Array:
    """RFC 3339 text of epoch milliseconds. A pane's rows share a few window starts: each distinct
    one is formatted once (strftime per row was ~5 % of a bounded job)."""
    distinct = pc.unique(ms)
    text = pc.strftime(pc.cast(distinct, pa.timestamp("ms", tz="UTC")), format="%Y-%m-%dT%H:%M:%SZ")
    return text.take(pc.index_in(ms, value_set=distinct))


def with_iso_windows(table: pa.Table, window_ms: int) -> pa.Table:
    """Replace the window start in millis by RFC 3339 window_start and window_end columns."""
    starts = table.column("window_start")
    ends = pc.add(starts, window_ms)
    table = table.drop_columns(["window_start"])
    return table.add_column(0, "window_end", _iso(ends)).add_column(0, "window_start", _iso(starts))


def file_rows(table: pa.Table) -> pa.Table:
    """The columns an analytics file row holds (``ROW_COLUMNS``), in that order."""
    return table.select(list(ROW_COLUMNS))


def bucket_seconds(window_s: int, streaming: bool) -> int:
    """Beam window size carrying the aggregates: the window itself when streaming, ~an hour otherwise."""
    if streaming or window_s >= 3600:
        return window_s
    return window_s * (3600 // window_s)


class WindowedAggregates(beam.PTransform):
    """Clean session batches -> one Arrow table per pane, a row per (window, action_type, device_type)."""

    def __init__(self, window_s: int, allowed_lateness_s: int = 0, streaming: bool = True) -> None:
        super().__init__()
        if window_s < 1:
            raise ValueError("window_s must be >= 1")
        self._window_s = window_s
        self._bucket_s = bucket_seconds(window_s, streaming)
        self._allowed_lateness_s = allowed_lateness_s
        self._gather_rows = 0 if streaming else BOUNDED_GATHER_ROWS

    def expand(self, clean):
        return (
            clean
            | "PartialAggregates"
            >> beam.ParDo(
                _PartialFn(self._window_s * 1000, self._bucket_s * 1000, self._gather_rows)
            ).with_output_types(tuple[int, Partial])
            | "FixedWindows"
            >> beam.WindowInto(
                window.FixedWindows(self._bucket_s),
                allowed_lateness=Duration(seconds=self._allowed_lateness_s),
            )
            | "GroupWindow" >> beam.GroupByKey()
            | "MergeWindow" >> beam.ParDo(_MergeFn(self._window_s * 1000))
        )


class _WriteAnalyticsFn(beam.DoFn):
    """One JSON-lines file per pane: ``analytics/dt=YYYY-MM-DD/hour=HH/pane-*.jsonl``.

    ``content_names``: the file is named by the pane's rows (``sinks/stable.py``), so a pane
    replayed after a restore rewrites its file instead of adding one."""

    def __init__(self, directory: str, run_id: str | None = None, content_names: bool = False) -> None:
        self._directory = directory
        self._write_dir = run_write_dir(directory, run_id)
        self._prefix = f"pane-{run_id}" if run_id else "pane"
        self._content_names = content_names
        self._rows = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.ANALYTICS_ROWS)

    def process(self, pane: pa.Table, pane_info=beam.DoFn.PaneInfoParam):
        if pane.num_rows == 0:
            return
        first = pane.column("window_start")[0].as_py()  # e.g. 2026-01-01T13:05:00.000Z
        if self._content_names:
            name = content_name(self._prefix, table_digest(pane, str(pane_info.index)), ".jsonl")
        else:
            name = unique_part(self._prefix, ".jsonl")
        relative = join(f"dt={first[:10]}", f"hour={first[11:13]}", name)
        write_bytes_atomically(join(self._write_dir, relative), to_json_lines(file_rows(pane)))
        self._rows.inc(pane.num_rows)
        yield join(self._directory, relative)


class WriteAnalytics(beam.PTransform):
    """Window panes of aggregate rows -> JSON-lines files, one per pane (staged under a bounded run's ``run_id``;
    written once per checkpoint under content names with ``exactly_once``)."""

    def __init__(self, directory: str, run_id: str | None = None, exactly_once: bool = False) -> None:
        super().__init__()
        self._directory = directory
        self._run_id = run_id
        self._exactly_once = exactly_once

    def expand(self, panes):
        write = _WriteAnalyticsFn(self._directory, self._run_id, content_names=self._exactly_once)
        return panes | "WriteAnalyticsFiles" >> (StableParDo(write) if self._exactly_once else beam.ParDo(write))
