"""Recompute the analytics windows that counted a forgotten subject, from the purged archive.

Aggregates hold no identifiers, but a window that counted the subject before the filter
took effect still carries their contribution (a session, a distinct user, their seconds).
The manifest names those windows; after the archive is purged they are recomputed from it
(the archive holds exactly the clean sessions the analytics counted) and their rows are
replaced in ``analytics/dt=.../hour=.../*.jsonl``:

1. recompute the affected windows from the archive partitions covering that hour;
2. write them as ``recomputed-<run>-<id>.jsonl`` in the hour's folder;
3. rewrite every other file of the folder without its rows for those windows.

A crash between 2 and 3 leaves the windows counted twice until the re-run, which the
request (still open: no receipt yet) gets: it replaces the rows of every file again,
the earlier recomputed file included, so the end state is that of one clean run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
from collections import defaultdict
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_rtbf.analytics.aggregate import file_rows, merge_partials, partial_aggregates, with_iso_windows
from beam_rtbf.purge import faults as fault_points
from beam_rtbf.purge.faults import FaultPoints
from beam_rtbf.purge.manifests import PendingManifest
from beam_rtbf.records import iso_ms, now_ms
from beam_rtbf.sinks.files import join, unique_part, write_bytes_atomically
from beam_rtbf.sinks.jsonl import to_json_lines

__all__ = [
    "AnalyticsTask",
    "AnalyticsResult",
    "analytics_tasks",
    "recompute_windows",
    "recompute_aggregates",
    "hour_of",
]

_COLUMNS = ["event_time_ms", "action_type", "device_type", "user_id", "secs_elapsed"]


@dataclasses.dataclass(frozen=True)
class AnalyticsTask:
    """One hour folder of analytics, the windows in it to recompute, and the requests that need them."""

    folder: str
    day: str
    hour: str
    windows: tuple[tuple[int, int], ...]
    request_ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class AnalyticsResult:
    task: AnalyticsTask
    status: str  # recomputed | blocked | error
    sessions_before: int
    sessions_after: int
    rows_replaced: int
    at: str
    detail: str = ""

    @property
    def verified(self) -> bool:
        return self.status == "recomputed"


def analytics_tasks(manifests: Sequence[PendingManifest], analytics_dir: str) -> list[AnalyticsTask]:
    """Group every manifest's windows by the analytics hour folder they are written to."""
    windows: dict[tuple[str, str], set[tuple[int, int]]] = defaultdict(set)
    requests: dict[tuple[str, str], set[str]] = defaultdict(set)
    for manifest in manifests:
        for start, end in manifest.analytics_windows:
            key = hour_of(start)
            windows[key].add((start, end))
            requests[key].add(manifest.request_id)
    return [
        AnalyticsTask(
            join(analytics_dir, f"dt={day}", f"hour={hour}"),
            day,
            hour,
            tuple(sorted(windows[(day, hour)])),
            tuple(sorted(requests[(day, hour)])),
        )
        for day, hour in sorted(windows)
    ]


def _match(patterns: Sequence[str]) -> list[str]:
    found: set[str] = set()
    for result in FileSystems.match(list(patterns)):
        found.update(m.path for m in result.metadata_list if "/.tmp-" not in m.path)
    return sorted(found)


def _archive_files(archive_dir: str, day: str, hour: str) -> list[str]:
    """Archive files whose partition can hold events of that hour (hourly, finer, or daily partitions)."""
    base = join(archive_dir, f"dt={day}")
    return _match(
        [
            join(base, "*.parquet"),
            join(base, f"hour={hour}", "*.parquet"),
            join(base, f"hour={hour}", "*", "*.parquet"),
            join(base, f"hour={hour}", "*", "*", "*.parquet"),
        ]
    )


def hour_of(start_ms: int) -> tuple[str, str]:
    """("YYYY-MM-DD", "HH") of a window start: the analytics folder (and archive partitions) it is in."""
    t = dt.datetime.fromtimestamp(start_ms / 1000, dt.timezone.utc)
    return f"{t:%Y-%m-%d}", f"{t:%H}"


def recompute_aggregates(windows: Sequence[tuple[int, int]], day: str, hour: str, archive_dir: str) -> pa.Table:
    """The aggregate rows of ``windows`` (all starting in that hour) from the archive as it is now."""
    lengths = {end - start for start, end in windows}
    if len(lengths) != 1:
        raise ValueError(f"windows of different lengths in one folder: {sorted(lengths)} ms")
    window_ms = lengths.pop()
    starts = pa.array([start for start, _ in windows], pa.int64())
    partials: list[pa.Table] = []
    for path in _archive_files(archive_dir, day, hour):
        with FileSystems.open(path) as handle:
            table = pq.read_table(io.BytesIO(handle.read()), columns=_COLUMNS)
        window_start = pc.multiply(pc.divide(table.column("event_time_ms"), window_ms), window_ms)
        table = table.filter(pc.is_in(window_start, value_set=starts))
        for batch in table.to_batches():
            partials.extend(p for _, p in partial_aggregates(batch, window_ms, 1 << 62))
    if not partials:
        return pa.table({})
    return with_iso_windows(merge_partials(partials), window_ms)


def _read_rows(path: str) -> list[dict]:
    with FileSystems.open(path) as handle:
        return [json.loads(line) for line in handle.read().splitlines() if line.strip()]


def recompute_windows(
    task: AnalyticsTask, archive_dir: str, run_id: str, allowed: bool = True, faults: FaultPoints | None = None
) -> AnalyticsResult:
    """Steps 1-3 of the module docstring for one hour folder (nothing if the guard stopped the purge).

    ``faults`` (tests): called at ``analytics_written``, between steps 2 and 3; default the installed ones.
    """
    at = iso_ms(now_ms())
    if not allowed:
        return AnalyticsResult(task, "blocked", 0, 0, 0, at, "the archive was not purged (blast-radius guard)")
    affected = {iso_ms(start) for start, _ in task.windows}
    try:
        fresh = recompute_aggregates(task.windows, task.day, task.hour, archive_dir)
        files = _match([join(task.folder, "*.jsonl")])
        contents = {path: _read_rows(path) for path in files}
        before = sum(r.get("sessions", 0) for rows in contents.values() for r in rows if r["window_start"] in affected)
        replaced = sum(1 for rows in contents.values() for r in rows if r["window_start"] in affected)
        if fresh.num_rows:
            target = join(task.folder, unique_part(f"recomputed-{run_id}", ".jsonl"))
            write_bytes_atomically(target, to_json_lines(file_rows(fresh)))
        fault_points.reached("analytics_written", faults)
        for path, rows in contents.items():
            kept = [r for r in rows if r["window_start"] not in affected]
            if len(kept) == len(rows):
                continue
            if kept:
                body = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in kept)
                write_bytes_atomically(path, body)
            else:
                FileSystems.delete([path])
        after = int(pc.sum(fresh.column("sessions")).as_py() or 0) if fresh.num_rows else 0
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        return AnalyticsResult(task, "error", 0, 0, 0, at, f"{task.folder}: {type(exc).__name__}: {exc}")
    return AnalyticsResult(task, "recomputed", before, after, replaced, at)
