"""Recompute the analytics rows a forgotten subject counted in in PostgreSQL (``--analytics_sink``).

The database is an output location like the analytics folder: a manifest's
``analytics_tables`` names the table and the windows whose rows counted the subject
before the request took effect. Once the archive is purged those windows are
recomputed from it (it holds exactly the clean sessions the analytics counted, as
``purge/analytics.py`` does for the files) and every part of them in the table is
replaced by one part of this purge, in one transaction: a reader sees the old
windows or the new, and a crash leaves the old ones for the re-run (the request
stays open).

Verification, after the commit and on a new connection: the view's rows of those
windows equal the recomputation (keys, sessions, distinct users, mean) and no counted
part of them was written by anyone but this purge (a running run's staged parts wait for its publish). Only then is the location verified.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence

import pyarrow as pa

from beam_rtbf.analytics.postgres import pane_parts
from beam_rtbf.purge.analytics import hour_of, recompute_aggregates
from beam_rtbf.purge.manifests import PendingManifest
from beam_rtbf.records import iso_ms, now_ms, parse_time_ms
from beam_rtbf.redact import mask_secrets
from beam_rtbf.sinks import postgres as pg

__all__ = ["AnalyticsTableTask", "AnalyticsTableResult", "analytics_table_tasks", "recompute_table"]


@dataclasses.dataclass(frozen=True)
class AnalyticsTableTask:
    """One analytics table, the windows in it to recompute, and the requests that need them."""

    uri: str
    windows: tuple[tuple[int, int], ...]
    request_ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class AnalyticsTableResult:
    task: AnalyticsTableTask
    status: str  # recomputed | blocked | error
    sessions_before: int
    sessions_after: int
    rows_before: int
    rows_after: int
    parts_replaced: int
    verified: bool
    at: str
    detail: str = ""


def analytics_table_tasks(manifests: Sequence[PendingManifest]) -> list[AnalyticsTableTask]:
    """Every manifest's table windows, grouped by table."""
    windows: dict[str, set[tuple[int, int]]] = defaultdict(set)
    requests: dict[str, set[str]] = defaultdict(set)
    for manifest in manifests:
        for uri, table_windows in manifest.analytics_tables:
            windows[uri].update(table_windows)
            requests[uri].add(manifest.request_id)
    return [
        AnalyticsTableTask(uri, tuple(sorted(windows[uri])), tuple(sorted(requests[uri]))) for uri in sorted(windows)
    ]


def _fresh_rows(task: AnalyticsTableTask, archive_dir: str) -> pa.Table:
    by_hour: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for window in task.windows:
        by_hour[hour_of(window[0])].append(window)
    tables = [recompute_aggregates(ws, day, hour, archive_dir) for (day, hour), ws in sorted(by_hour.items())]
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else pa.table({})


def _expected(fresh: pa.Table) -> list[tuple]:
    """What the view must show for the windows: (start_ms, action_type, device_type, sessions, users, mean)."""
    if not fresh.num_rows:
        return []
    return _ordered(
        (parse_time_ms(r["window_start"]), r["action_type"], r["device_type"], r["sessions"], r["distinct_users"],
         r["avg_secs_elapsed"])
        for r in fresh.to_pylist()
    )  # fmt: skip


def _ordered(rows) -> list[tuple]:
    """Rows by window and keys, in Python's order (a database's collation may order text otherwise)."""
    return sorted(rows, key=lambda r: (r[0], r[1] is not None, r[1] or "", r[2] is not None, r[2] or ""))


def _same(found: list[tuple], expected: list[tuple]) -> bool:
    if len(found) != len(expected):
        return False
    for a, b in zip(found, expected):
        if tuple(a[:5]) != tuple(b[:5]):
            return False
        if (a[5] is None) != (b[5] is None) or (a[5] is not None and not math.isclose(a[5], b[5], rel_tol=1e-9)):
            return False
    return True


def recompute_table(
    task: AnalyticsTableTask, archive_dir: str, run_id: str, allowed: bool = True
) -> AnalyticsTableResult:
    """Recompute, replace and verify the task's windows (nothing if the guard stopped the purge)."""
    at = iso_ms(now_ms())
    if not allowed:
        return AnalyticsTableResult(
            task, "blocked", 0, 0, 0, 0, 0, False, at, "the archive was not purged (blast-radius guard)"
        )
    import psycopg

    writer = f"purge-{run_id}"
    starts = [start for start, _ in task.windows]
    try:
        target = pg.parse_sink(task.uri)
        fresh = _fresh_rows(task, archive_dir)
        with pg.connection(target) as conn:
            pg.ensure_schema(conn, target)
            sessions_before, rows_before, replaced = pg.replace_windows(
                conn, target, writer, starts, pane_parts(fresh, writer, 0) if fresh.num_rows else []
            )
        # The check reads what was committed, on a connection of its own.
        expected = _expected(fresh)
        with pg.connection(target) as conn:
            found = _ordered(pg.window_rows(conn, target, starts))
            foreign = pg.foreign_parts(conn, target, starts, writer)
    except (OSError, ValueError, KeyError, pa.ArrowException, psycopg.Error) as exc:
        # Unreachable database, failed statement (rolled back: the old rows stay), unreadable archive.
        return AnalyticsTableResult(task, "error", 0, 0, 0, 0, 0, False, at, _error(task, exc))
    sessions_after = sum(int(r[3]) for r in found)
    problems = []
    if not _same(found, expected):
        problems.append(
            f"the table's rows of these windows ({len(found)} rows, {sessions_after} sessions) differ from the "
            f"purged archive's ({len(expected)} rows, {sum(r[3] for r in expected)} sessions)"
        )
    if foreign:
        problems.append(f"{foreign} parts of these windows were written by others after the replace")
    if problems:
        return AnalyticsTableResult(
            task, "error", sessions_before, sessions_after, rows_before, len(found), replaced, False, at,
            "; ".join(problems),
        )  # fmt: skip
    return AnalyticsTableResult(
        task, "recomputed", sessions_before, sessions_after, rows_before, len(found), replaced, True, at,
        f"re-read after commit: {len(found)} rows of {len(starts)} windows equal the purged archive's aggregates",
    )  # fmt: skip


def _error(task: AnalyticsTableTask, exc: BaseException) -> str:
    """What a receipt says of a database error: its SQLSTATE and primary message only. The full text's
    DETAIL and CONTEXT lines can quote a row's values, and a receipt outlives the data it is about."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if primary:
        text = f"{type(exc).__name__} [{diag.sqlstate}]: {primary}"
    else:
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return mask_secrets(f"{task.uri}: {' '.join(text.split())}")[:500]
