"""What the dashboard shows, read from a run's output folder (and the registry): pure functions.

Each function takes the output folder (and, where it matters, the registry, the hasher and
``now``) and returns plain values; nothing here knows about Dash. What they return is fit
to serve: requests are named by ``request_ref``, subjects by their keyed hash, dead letters
by a reason category, and no raw identifier, raw record or request id is ever returned
(``RequestRecord`` holds them, for this module and the receipt lookup only).

    OUTPUT/analytics/dt=*/hour=*/*.jsonl    analytics_frame, analytics_totals, analytics_series
    OUTPUT/summary.json, OUTPUT/_runs/       run_figures (and receipts/_runs/ for purge runs)
    registry + manifests/ + receipts/        requests_table, receipt_view, latencies
    OUTPUT/deadletter/                       dead_letters
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from beam_rtbf.dashboard.privacy import REDACTED, Redactor, reason_category, request_ref
from beam_rtbf.manifests.build import manifest_path
from beam_rtbf.purge.hashing import SubjectHasher
from beam_rtbf.purge.receipts import receipt_path
from beam_rtbf.records import deadline_ms, parse_time_ms
from beam_rtbf.registry.base import DeletionRegistry

__all__ = [
    "ANALYTICS_SCHEMA",
    "AnalyticsFilters",
    "AnalyticsTotals",
    "analytics_files",
    "read_analytics_files",
    "filter_analytics",
    "analytics_frame",
    "analytics_totals",
    "analytics_series",
    "analytics_choices",
    "mask_labels",
    "RunRow",
    "PurgeRunRow",
    "RunFigures",
    "run_figures",
    "RequestRecord",
    "RequestRow",
    "RequestsView",
    "request_records",
    "requests_table",
    "receipt_view",
    "Latencies",
    "latencies",
    "DeadLetterCounts",
    "dead_letters",
    "METRICS",
    "SPLITS",
    "RESOLUTIONS",
]

DAY_MS = 86_400_000

# -- analytics ---------------------------------------------------------------------------------

ANALYTICS_SCHEMA = pa.schema(
    [
        ("window_start", pa.string()),
        ("window_end", pa.string()),
        ("action_type", pa.string()),
        ("device_type", pa.string()),
        ("sessions", pa.int64()),
        ("distinct_users", pa.int64()),
        ("avg_secs_elapsed", pa.float64()),
    ]
)
METRICS = {
    "sessions": "sessions",
    "distinct_users": "distinct users (summed over windows and groups)",
    "avg_secs_elapsed": "average duration (s, weighted by sessions)",
}
SPLITS = {"action_type": "action type", "device_type": "device type", "none": "all together"}
RESOLUTIONS = {"window": "per window", "hour": "per hour", "day": "per day"}
_BUCKET_CHARS = {"hour": 13, "day": 10}  # prefix of "YYYY-MM-DDTHH:MM:SS.mmmZ" that names the bucket
_BUCKET_SUFFIX = {"hour": ":00:00.000Z", "day": "T00:00:00.000Z"}
_MISSING = "(none)"


@dataclasses.dataclass(frozen=True)
class AnalyticsFilters:
    """Which rows to keep; an empty tuple keeps every value."""

    action_types: tuple[str, ...] = ()
    device_types: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class AnalyticsTotals:
    rows: int
    windows: int
    sessions: int
    distinct_users: int  # summed over rows: a user active in two windows counts twice
    avg_secs_elapsed: float | None  # weighted by sessions


def _visible(path: Path) -> bool:
    """Not a temporary of an atomic write (``.tmp-*``) nor inside a bounded run's ``_staging``."""
    return not path.name.startswith(".") and "_staging" not in path.parts


def analytics_files(output: str | Path) -> list[Path]:
    """The published analytics files: ``analytics/dt=*/hour=*/*.jsonl`` (sorted)."""
    return sorted(p for p in Path(output, "analytics").glob("dt=*/hour=*/*.jsonl") if _visible(p))


def read_analytics_files(paths: Iterable[Path]) -> pa.Table:
    """The rows of these JSON-lines files, in ``ANALYTICS_SCHEMA`` (other fields ignored)."""
    options = pa_json.ParseOptions(explicit_schema=ANALYTICS_SCHEMA, unexpected_field_behavior="ignore")
    tables = [pa_json.read_json(p, parse_options=options) for p in paths if p.stat().st_size]
    if not tables:
        return ANALYTICS_SCHEMA.empty_table()
    return pa.concat_tables([t.select(ANALYTICS_SCHEMA.names).cast(ANALYTICS_SCHEMA) for t in tables])


def filter_analytics(table: pa.Table, filters: AnalyticsFilters) -> pa.Table:
    mask = None
    for column, values in (("action_type", filters.action_types), ("device_type", filters.device_types)):
        if values:
            keep = pc.is_in(table.column(column), value_set=pa.array(list(values), pa.string()))
            mask = keep if mask is None else pc.and_(mask, keep)
    return table if mask is None else table.filter(mask)


_EMAIL_LIKE = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")


def mask_labels(table: pa.Table, redact: Redactor) -> pa.Table:
    """The table with every action or device type that holds a known identifier or an e-mail address
    shown as ``[redacted]``: a label is shown in dropdowns and legends, so it must not name anyone
    (rows keep their figures and still add up; the masked ones can be chosen together)."""
    for column in ("action_type", "device_type"):
        values = table.column(column)
        mapping = {
            v: (REDACTED if v is not None and (redact.found(v) or _EMAIL_LIKE.search(v)) else v)
            for v in pc.unique(values).to_pylist()
        }
        if all(k == v for k, v in mapping.items()):
            continue
        masked = pa.array([mapping[v] for v in values.to_pylist()], pa.string())
        table = table.set_column(table.schema.get_field_index(column), column, masked)
    return table


def analytics_frame(
    output: str | Path, filters: AnalyticsFilters = AnalyticsFilters(), read: Callable[[], pa.Table] | None = None
) -> pa.Table:
    """The analytics rows that pass ``filters``: from the output's files, or from ``read()`` (another store,
    e.g. ``analytics_pg.PostgresAnalytics.read``, or a cache of the files)."""
    table = read() if read is not None else read_analytics_files(analytics_files(output))
    return filter_analytics(table, filters)


def _weighted_secs(table: pa.Table) -> pa.Array:
    return pc.multiply(
        pc.fill_null(table.column("avg_secs_elapsed"), 0.0), pc.cast(table.column("sessions"), pa.float64())
    )


def analytics_totals(table: pa.Table) -> AnalyticsTotals:
    sessions = int(pc.sum(table.column("sessions")).as_py() or 0)
    secs = float(pc.sum(_weighted_secs(table)).as_py() or 0.0) if table.num_rows else 0.0
    return AnalyticsTotals(
        rows=table.num_rows,
        windows=len(pc.unique(table.column("window_start"))) if table.num_rows else 0,
        sessions=sessions,
        distinct_users=int(pc.sum(table.column("distinct_users")).as_py() or 0),
        avg_secs_elapsed=secs / sessions if sessions else None,
    )


def analytics_choices(table: pa.Table) -> tuple[list[str], list[str]]:
    """The action types and device types present (for the filter dropdowns), sorted."""

    def values(column: str) -> list[str]:
        return sorted(v if v is not None else _MISSING for v in pc.unique(table.column(column)).to_pylist())

    return values("action_type"), values("device_type")


def analytics_series(
    table: pa.Table, metric: str = "sessions", split_by: str = "action_type", resolution: str = "window"
) -> dict[str, tuple[list[str], list[float]]]:
    """group -> (bucket starts, values), buckets ascending; ``metric`` in METRICS, ``split_by`` in SPLITS,
    ``resolution`` in RESOLUTIONS. Average durations are weighted by sessions."""
    if metric not in METRICS or split_by not in SPLITS or resolution not in RESOLUTIONS:
        raise ValueError(f"unknown metric/split/resolution {metric!r}/{split_by!r}/{resolution!r}")
    if not table.num_rows:
        return {}
    starts = table.column("window_start")
    if resolution in _BUCKET_CHARS:
        starts = pc.binary_join_element_wise(
            pc.utf8_slice_codeunits(starts, 0, _BUCKET_CHARS[resolution]), _BUCKET_SUFFIX[resolution], ""
        )
    group = (
        pa.array([SPLITS["none"]] * table.num_rows, pa.string())
        if split_by == "none"
        else pc.fill_null(table.column(split_by), _MISSING)
    )
    work = pa.table(
        {
            "bucket": starts,
            "group": group,
            "sessions": table.column("sessions"),
            "distinct_users": table.column("distinct_users"),
            "secs": _weighted_secs(table),
        }
    )
    summed = (
        work.group_by(["group", "bucket"])
        .aggregate([("sessions", "sum"), ("distinct_users", "sum"), ("secs", "sum")])
        .sort_by([("group", "ascending"), ("bucket", "ascending")])
    )
    out: dict[str, tuple[list[str], list[float]]] = {}
    for row in summed.to_pylist():
        xs, ys = out.setdefault(row["group"], ([], []))
        xs.append(row["bucket"])
        if metric == "avg_secs_elapsed":
            ys.append(row["secs_sum"] / row["sessions_sum"] if row["sessions_sum"] else 0.0)
        else:
            ys.append(float(row[f"{metric}_sum"]))
    return out


# -- runs --------------------------------------------------------------------------------------

RUN_FIGURES = ("sessions_in", "clean", "suppressed", "dead_lettered", "sessions_per_s", "elapsed_s")
_SUMMARY_SHOWN = (
    *RUN_FIGURES,
    "requests_in",
    "requests_accepted",
    "requests_duplicate",
    "requests_ignored",
    "requests_dead_lettered",
    "manifests_written",
    "archive_records",
    "analytics_rows",
    "conservation_ok",
    "runner",
    "mode",
    "filter_strategy",
    "run_id",
    "stopped_by",
)


@dataclasses.dataclass(frozen=True)
class RunRow:
    """One bounded run of the ledger (``_runs/<run_id>.json``) with its figures."""

    run_id: str
    state: str
    started_at: str | None
    finished_at: str | None
    mode: str | None
    runner: str | None
    sessions_in: int | None
    clean: int | None
    suppressed: int | None
    dead_lettered: int | None
    sessions_per_s: float | None
    elapsed_s: float | None


@dataclasses.dataclass(frozen=True)
class PurgeRunRow:
    """One purge run (``receipts/_runs/<run>-summary.json``)."""

    run: str
    requests_pending: int | None
    verified: int | None
    incomplete: int | None
    blocked: int | None
    archive_records_removed: int | None
    elapsed_s: float | None


@dataclasses.dataclass(frozen=True)
class RunFigures:
    latest: dict[str, Any] | None  # summary.json, the fields above only (no URIs: they can hold secrets)
    runs: list[RunRow]  # newest first
    purges: list[PurgeRunRow]  # newest first


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _number(value: Any) -> int | float | None:
    """A figure from a file someone may have edited: a finite number, else None (shown as n/a)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int | None:
    return len(value) if isinstance(value, list) else None


def _shown(key: str, value: Any) -> Any:
    if key in ("runner", "mode", "filter_strategy", "run_id", "stopped_by"):
        return _text(value)
    if key == "conservation_ok":
        return value if isinstance(value, bool) else None
    return _number(value)


def run_figures(output: str | Path, last: int = 10) -> RunFigures:
    """The latest summary and the ``last`` newest bounded runs and purge runs."""
    out = Path(output)
    summary = _read_json(out / "summary.json")
    latest = (
        {k: _shown(k, summary.get(k)) for k in _SUMMARY_SHOWN if k in summary} if isinstance(summary, dict) else None
    )
    runs = []
    for path in (out / "_runs").glob("*.json"):
        record = _read_json(path)
        if not isinstance(record, dict) or not _visible(path):
            continue
        figures = record.get("summary")
        figures = figures if isinstance(figures, dict) else {}
        runs.append(
            RunRow(
                run_id=_text(record.get("run_id")) or path.stem,
                state=_text(record.get("state")) or "unknown",
                started_at=_text(record.get("started_at")),
                finished_at=_text(record.get("committed_at") or record.get("updated_at")),
                mode=_text(figures.get("mode")),
                runner=_text(figures.get("runner")),
                **{k: _number(figures.get(k)) for k in RUN_FIGURES},
            )
        )
    runs.sort(key=lambda r: (r.started_at or "", r.run_id), reverse=True)
    purges = []
    for path in (out / "receipts" / "_runs").glob("*-summary.json"):
        body = _read_json(path)
        if not isinstance(body, dict):
            continue
        purges.append(
            PurgeRunRow(
                run=_text(body.get("run")) or path.stem,
                requests_pending=_number(body.get("requests_pending")),
                verified=_number(body.get("verified")),
                incomplete=_count(body.get("incomplete")),
                blocked=_count(body.get("blocked")),
                archive_records_removed=_number(body.get("archive_records_removed")),
                elapsed_s=_number(body.get("elapsed_s")),
            )
        )
    purges.sort(key=lambda p: p.run, reverse=True)  # run ids start with their UTC time
    return RunFigures(latest, runs[:last], purges[:last])


# -- erasure requests ---------------------------------------------------------------------------

TIMELINE_STEPS = ("requested", "accepted", "effective", "purged", "verified")


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """Everything known of one request, raw ids included: never served (see ``RequestRow``)."""

    request_id: str
    subject_ids: tuple[str, ...]  # empty once only hashes are left (a redacted manifest, no registry)
    subject_hashes: tuple[str, ...]  # from a receipt or a redacted manifest
    regulation: str
    requested_at_ms: int | None
    accepted_at_ms: int | None
    deadline_ms: int | None
    events: tuple[tuple[str, int, str], ...]  # (status, at_ms, detail), oldest first
    manifest: dict | None
    receipt: dict | None
    receipt_problem: str | None = None  # a receipt file is there but cannot be shown (why)


@dataclasses.dataclass(frozen=True)
class RequestRow:
    """One request as the dashboard shows it: keyed hashes and times (epoch ms), no identifier."""

    ref: str
    subject_hash: str
    regulation: str
    status: str
    requested_at_ms: int | None
    accepted_at_ms: int | None
    effective_at_ms: int | None
    purged_at_ms: int | None
    verified_at_ms: int | None
    deadline_ms: int | None
    days_left: float | None
    overdue: bool
    records_removed: int | None  # archive + index + dead letters, from the receipt
    has_receipt: bool
    receipt_problem: str | None = None  # the receipt file cannot be shown (why; no identifier in it)


@dataclasses.dataclass(frozen=True)
class RequestsView:
    rows: list[RequestRow]  # deadline ascending (no deadline last)
    counts_by_status: dict[str, int]
    overdue: int
    redactor: Redactor  # knows every identifier of these requests


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return parse_time_ms(value)
    except ValueError:
        return None


def _request_from_manifest(body: dict) -> RequestRecord | None:
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        return None
    subject_ids = tuple(s for s in _list(body.get("subject_ids")) if isinstance(s, str))
    return RequestRecord(
        request_id=request_id,
        subject_ids=subject_ids,
        subject_hashes=tuple(s for s in _list(body.get("subject_hashes")) if isinstance(s, str)),
        regulation=str(body.get("regulation") or "gdpr"),
        requested_at_ms=_ms(body.get("requested_at")),
        accepted_at_ms=_ms(body.get("accepted_at")),
        deadline_ms=_ms(body.get("deadline")),
        events=tuple(
            (status, at, "")
            for status, at in (
                ("received", _ms(body.get("accepted_at"))),
                ("suppressed", _ms(body.get("effective_at"))),
                ("verified", _ms(body.get("verified_at"))),
            )
            if at is not None
        ),
        manifest=body,
        receipt=None,
    )


def request_records(output: str | Path, registry: DeletionRegistry | None) -> list[RequestRecord]:
    """Every request: the registry's (the source of truth) with their manifests and receipts; without a
    registry, the manifests' requests. Raw ids inside: for this module's views only."""
    out = Path(output)
    manifests_dir, receipts_dir = str(out / "manifests"), str(out / "receipts")
    records: list[RequestRecord] = []
    if registry is not None:
        for accepted in registry.requests():
            request = accepted.request
            manifest = _read_json(Path(manifest_path(manifests_dir, request.request_id)))
            records.append(
                RequestRecord(
                    request_id=request.request_id,
                    subject_ids=tuple(request.subject_ids),
                    subject_hashes=(),
                    regulation=request.regulation,
                    requested_at_ms=request.requested_at_ms,
                    accepted_at_ms=accepted.accepted_at_ms,
                    deadline_ms=deadline_ms(request.regulation, request.requested_at_ms),
                    events=tuple((e.status, e.at_ms, e.detail) for e in registry.timeline(request.request_id)),
                    manifest=manifest if isinstance(manifest, dict) else None,
                    receipt=None,
                )
            )
    else:
        for path in sorted((out / "manifests").glob("*.json")):
            body = _read_json(path) if _visible(path) else None
            record = _request_from_manifest(body) if isinstance(body, dict) else None
            if record is not None:
                records.append(record)
    with_receipts = []
    for record in records:
        path = Path(receipt_path(receipts_dir, record.request_id))
        receipt = _read_json(path)
        problem = None
        if receipt is None and path.is_file():
            problem = "the receipt file is not readable JSON"
        elif isinstance(receipt, dict) and receipt.get("request_id") == record.request_id:
            problem = _receipt_problem(receipt)
        elif receipt is not None and not isinstance(receipt, dict):
            problem = "the receipt file is not a JSON object"
        if problem or not (isinstance(receipt, dict) and receipt.get("request_id") == record.request_id):
            receipt = None
        hashes = record.subject_hashes
        if receipt is not None and not hashes:
            hashes = (str(receipt.get("subject_hash")), *map(str, receipt.get("alias_hashes") or []))
        with_receipts.append(
            dataclasses.replace(record, receipt=receipt, subject_hashes=hashes, receipt_problem=problem)
        )
    return with_receipts


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _receipt_problem(body: dict) -> str | None:
    """Why a receipt cannot be shown (a field of the wrong type: a damaged or hand-edited file), or None."""

    def counts(value: Any) -> bool:
        return value is None or (
            isinstance(value, dict) and all(v is None or _number(v) is not None for v in value.values())
        )

    verification = body.get("verification")
    checks = [
        ("subject_hash", body.get("subject_hash") is None or isinstance(body.get("subject_hash"), str)),
        ("alias_hashes", body.get("alias_hashes") is None or isinstance(body.get("alias_hashes"), list)),
        ("records_removed", counts(body.get("records_removed"))),
        ("locations", body.get("locations") is None or isinstance(body.get("locations"), list)),
        ("verification", verification is None or isinstance(verification, dict)),
    ]
    if isinstance(verification, dict):
        found = verification.get("found")
        checks += [
            ("verification.found", found is None or _number(found) is not None),
            ("verification.scanned", counts(verification.get("scanned"))),
        ]
    bad = [name for name, ok in checks if not ok]
    return (
        f"the receipt's {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not what a receipt holds" if bad else None
    )


def _identifiers(records: Iterable[RequestRecord]) -> set[str]:
    ids: set[str] = set()
    for record in records:
        ids.add(record.request_id)
        ids.update(record.subject_ids)
        if record.manifest:
            ids.update(s for s in _list(record.manifest.get("subject_ids")) if isinstance(s, str))
    return ids


def _event_at(record: RequestRecord, status: str) -> int | None:
    return next((at for s, at, _ in record.events if s == status), None)


def _status(record: RequestRecord) -> str:
    """``verified`` once verified (a later step does not reopen it), else the newest step."""
    steps = [s for s, _, _ in record.events]
    if "verified" in steps:
        return "verified"
    return steps[-1] if steps else "received"


def _subject_hash(record: RequestRecord, hasher: SubjectHasher) -> str:
    if record.subject_hashes:
        return record.subject_hashes[0]
    return hasher.hash(record.subject_ids[0]) if record.subject_ids else "unknown"


def _row(record: RequestRecord, hasher: SubjectHasher, now_ms: int) -> RequestRow:
    status = _status(record)
    days_left = (record.deadline_ms - now_ms) / DAY_MS if record.deadline_ms is not None else None
    effective = _ms((record.manifest or {}).get("effective_at")) or _event_at(record, "suppressed")
    removed = None
    if record.receipt is not None:
        removed = sum(int(v or 0) for v in (record.receipt.get("records_removed") or {}).values())
    return RequestRow(
        ref=request_ref(hasher, record.request_id),
        subject_hash=_subject_hash(record, hasher),
        regulation=record.regulation,
        status=status,
        requested_at_ms=record.requested_at_ms,
        accepted_at_ms=record.accepted_at_ms if record.accepted_at_ms is not None else _event_at(record, "received"),
        effective_at_ms=effective,
        purged_at_ms=_event_at(record, "purged"),
        verified_at_ms=_event_at(record, "verified"),
        deadline_ms=record.deadline_ms,
        days_left=days_left,
        overdue=status != "verified" and days_left is not None and days_left < 0,
        records_removed=removed,
        has_receipt=record.receipt is not None,
        receipt_problem=record.receipt_problem,
    )


def requests_table(
    output: str | Path,
    registry: DeletionRegistry | None,
    now_ms: int,
    hasher: SubjectHasher,
    records: Sequence[RequestRecord] | None = None,
) -> RequestsView:
    """Every request by deadline (earliest first: overdue ones lead), with counts by status."""
    records = request_records(output, registry) if records is None else records
    rows = sorted(
        (_row(r, hasher, now_ms) for r in records),
        key=lambda r: (r.deadline_ms is None, r.deadline_ms or 0, r.ref),
    )
    counts = Counter(r.status for r in rows)
    return RequestsView(
        rows=rows,
        counts_by_status=dict(sorted(counts.items())),
        overdue=sum(r.overdue for r in rows),
        redactor=Redactor(_identifiers(records)),
    )


# Receipt fields shown per location (anything else a receipt may gain stays out until it is listed).
_LOCATION_FIELDS = (
    "kind",
    "path",
    "uri",
    "location",
    "status",
    "records_removed",
    "records_after",
    "windows",
    "sessions_before",
    "sessions_after",
    "matched_by",
    "http_status",
    "attempts",
    "verified",
    "verification",
    "reason",
    "retention_holds_until",
    "noncurrent_versions_deleted",
    "at",
)


def _scrub(value: Any, redact: Redactor) -> Any:
    """Every string inside ``value`` with the known identifiers (and secrets in URLs) removed."""
    from beam_rtbf.redact import mask_secrets

    if isinstance(value, str):
        return redact(mask_secrets(value))
    if isinstance(value, list):
        return [_scrub(v, redact) for v in value]
    if isinstance(value, dict):
        return {str(k): _scrub(v, redact) for k, v in value.items()}
    return value


def receipt_view(
    output: str | Path,
    registry: DeletionRegistry | None,
    hasher: SubjectHasher,
    ref: str,
    now_ms: int,
    records: Sequence[RequestRecord] | None = None,
) -> dict | None:
    """One request's page: its row, its timeline and its receipt (None for an unknown ref)."""
    records = request_records(output, registry) if records is None else records
    redact = Redactor(_identifiers(records))
    record = next((r for r in records if request_ref(hasher, r.request_id) == ref), None)
    if record is None:
        return None
    row = _row(record, hasher, now_ms)
    timeline = [
        {"step": step, "at_ms": at}
        for step, at in (
            ("requested", row.requested_at_ms),
            ("accepted", row.accepted_at_ms),
            ("effective", row.effective_at_ms),
            ("purged", row.purged_at_ms),
            ("verified", row.verified_at_ms),
        )
        if at is not None
    ]
    # A purge that did not verify says why (paths and counts; identifiers redacted).
    timeline += [
        {"step": status, "at_ms": at, "detail": redact(detail)}
        for status, at, detail in record.events
        if status.startswith("purge_")
    ]
    timeline.sort(key=lambda s: (s["at_ms"], TIMELINE_STEPS.index(s["step"]) if s["step"] in TIMELINE_STEPS else 9))
    receipt = None
    if record.receipt is not None:
        body = record.receipt
        verification = body.get("verification") or {}
        receipt = {
            "status": body.get("status"),
            "purge_run": body.get("purge_run"),
            "completed_at": body.get("completed_at"),
            "alias_hashes": list(body.get("alias_hashes") or []),
            "records_removed": dict(body.get("records_removed") or {}),
            "locations": [
                {k: loc[k] for k in _LOCATION_FIELDS if k in loc}
                for loc in body.get("locations") or []
                if isinstance(loc, dict)
            ],
            "verification": {
                k: verification.get(k) for k in ("passed", "found", "scanned", "method", "found_in", "unreadable")
            },
        }
        receipt = _scrub(receipt, redact)
    return {"row": row, "timeline": timeline, "receipt": receipt}


# -- effectiveness latency ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Latencies:
    """Accepted -> effective (the filter drops the subject), per request that has both, in seconds."""

    values_s: list[float]
    p50_s: float | None
    p99_s: float | None
    max_s: float | None

    @property
    def count(self) -> int:
        return len(self.values_s)


def _nearest_rank(ordered: Sequence[float], p: float) -> float:
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def latencies(rows: Iterable[RequestRow]) -> Latencies:
    values = sorted(
        (r.effective_at_ms - r.accepted_at_ms) / 1000
        for r in rows
        if r.effective_at_ms is not None and r.accepted_at_ms is not None
    )
    if not values:
        return Latencies([], None, None, None)
    return Latencies(values, _nearest_rank(values, 50), _nearest_rank(values, 99), values[-1])


# -- dead letters ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DeadLetterCounts:
    total: int
    by_reason: list[tuple[str, str, int]]  # (stream, reason category, count), most first
    files: int
    unreadable_lines: int  # lines of a dead-letter file that are not JSON objects


def dead_letters(output: str | Path, redact: Redactor | None = None) -> DeadLetterCounts:
    """Dead letters by stream and reason category (``reason_category``); their bytes are never read out."""
    root = Path(output, "deadletter")
    counts: Counter[tuple[str, str]] = Counter()
    files = unreadable = 0
    for path in sorted(p for p in root.rglob("*.jsonl") if _visible(p.relative_to(root.parent))):
        files += 1
        with path.open("rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    letter = json.loads(line)
                except ValueError:
                    letter = None
                if not isinstance(letter, dict):
                    unreadable += 1
                    continue
                category = reason_category(str(letter.get("reason") or ""))
                counts[(str(letter.get("stream") or "unknown"), redact(category) if redact else category)] += 1
    by_reason = sorted(((s, r, n) for (s, r), n in counts.items()), key=lambda t: (-t[2], t[0], t[1]))
    return DeadLetterCounts(sum(counts.values()), by_reason, files, unreadable)
