"""Receipts and audit records: per request and location, what was removed, when, and the re-scan result.

A receipt says ``verified`` only when every location is done and the independent
scan of every stored file (``verify.py``) found none of the subject's records and
could read every file; its ``verification`` section says what was scanned.

Neither holds a subject id: the subject appears as a keyed hash only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from beam_rtbf.archive.index import relative_to
from beam_rtbf.purge.analytics import AnalyticsResult
from beam_rtbf.purge.analytics_table import AnalyticsTableResult
from beam_rtbf.purge.hashing import SubjectHasher
from beam_rtbf.purge.manifests import PendingManifest
from beam_rtbf.purge.rewrite import FileResult
from beam_rtbf.purge.subjects import MATCHED_BY_FIELD, MATCHED_BY_RAW_TOKEN
from beam_rtbf.records import iso_ms
from beam_rtbf.sinks.files import join, safe_file_name

__all__ = ["build_receipt", "receipt_status", "receipt_path", "verification_problem"]


def receipt_path(receipts_dir: str, request_id: str) -> str:
    """Where a request's receipt lives: a name derived from the id, never the id itself."""
    return join(receipts_dir, safe_file_name(request_id))


def _file_location(result: FileResult, request_id: str, roots: Mapping[str, str]) -> dict:
    root = roots.get(result.task.kind, "")
    location = {
        "kind": "archive_partition" if result.task.kind == "archive" else result.task.kind,
        # Relative to the location's root (archive/ or deadletter/), or a full URI outside it.
        "path": relative_to(root, result.task.path) if root else result.task.path,
        "status": result.status,
        "records_removed": result.removed.get(request_id, 0),
        "records_after": result.records_after,
        "verified": result.verified,
        "verification": "re-scan found 0 records of the subject" if result.verified else result.detail,
        "noncurrent_versions_deleted": result.versions_deleted,
        "at": result.at,
    }
    if result.task.kind == "deadletter":
        by = result.matched_by.get(request_id, {})
        location["matched_by"] = {how: by.get(how, 0) for how in (MATCHED_BY_FIELD, MATCHED_BY_RAW_TOKEN)}
    return location


def _analytics_location(result: AnalyticsResult, root: str) -> dict:
    return {
        "kind": "analytics_window",
        "path": relative_to(root, result.task.folder) if root else result.task.folder,
        "windows": [iso_ms(start) for start, _ in result.task.windows],
        "status": result.status,
        # Windows are shared: these are the windows' totals, for every request of the run in them.
        "sessions_before": result.sessions_before,
        "sessions_after": result.sessions_after,
        "requests_in_windows": len(result.task.request_ids),
        "verified": result.verified,
        "verification": "windows recomputed from the purged archive" if result.verified else result.detail,
        "at": result.at,
    }


def _table_location(result: AnalyticsTableResult) -> dict:
    return {
        "kind": "analytics_table",
        "uri": result.task.uri,  # no password: refused in the URI
        "windows": [iso_ms(start) for start, _ in result.task.windows],
        "status": result.status,
        # As for the files: the windows' totals, for every request of the run in them.
        "sessions_before": result.sessions_before,
        "sessions_after": result.sessions_after,
        "rows_before": result.rows_before,
        "rows_after": result.rows_after,
        "parts_replaced": result.parts_replaced,
        "requests_in_windows": len(result.task.request_ids),
        "verified": result.verified,
        "verification": result.detail,
        "at": result.at,
    }


def receipt_status(
    files: Sequence[FileResult],
    api_failures: Sequence[dict],
    analytics: Sequence[AnalyticsResult] = (),
    verification: dict | None = None,
    tables: Sequence[AnalyticsTableResult] = (),
) -> str:
    """``verified`` needs every location done and the independent scan passed (no scan: never verified)."""
    windows = [*analytics, *tables]
    if any(r.status == "blocked" for r in files) or any(a.status == "blocked" for a in windows):
        return "blocked"
    if any(not r.verified for r in files) or api_failures or any(not a.verified for a in windows):
        return "incomplete"
    if verification is None or not verification.get("passed"):
        return "incomplete"
    return "verified"


def _relative_paths(verification: dict | None, roots: Mapping[str, str]) -> dict | None:
    """The scan's findings with paths relative to their root (dead letters: deadletter/, else archive/)."""
    if not verification:
        return verification
    out = dict(verification)
    for key in ("found_in", "unreadable"):
        entries = []
        for entry in verification.get(key) or []:
            root = roots.get("deadletter" if entry.get("kind") == "deadletter" else "archive", "")
            entries.append({**entry, "path": relative_to(root, entry["path"])} if root and "path" in entry else entry)
        out[key] = entries
    return out


def verification_problem(verification: dict) -> str:
    """Why the independent scan did not pass, in words for the registry timeline ("" if it passed)."""
    if verification.get("passed"):
        return ""
    parts = []
    if verification["found"]:
        where = ", ".join(f"{f['path']} ({f['records']})" for f in verification["found_in"][:5])
        parts.append(f"verification found {verification['found']} records of the subject in {where}")
    parts += [f"unreadable: {u['reason']}" for u in verification["unreadable"][:5]]
    return "; ".join(parts)


def build_receipt(
    manifest: PendingManifest,
    files: Sequence[FileResult],
    api_done: Sequence[dict],
    api_failed: Sequence[dict],
    hasher: SubjectHasher,
    run_id: str,
    at: str,
    analytics: Sequence[AnalyticsResult] = (),
    roots: Mapping[str, str] | None = None,
    verification: dict | None = None,
    tables: Sequence[AnalyticsTableResult] = (),
) -> dict:
    """The receipt. ``roots`` maps a file kind (archive, index, deadletter, analytics) to the root its
    paths are stored relative to; ``verification`` is the independent scan's section
    (``VerificationSummary.for_request``); ``tables`` the analytics tables (PostgreSQL) recomputed."""
    locations = [
        _file_location(r, manifest.request_id, roots or {})
        for r in sorted(files, key=lambda r: (r.task.kind, r.task.path))
    ]
    locations += [
        {
            "kind": "stream",
            "uri": stream.get("uri"),
            "status": "expires_by_retention",
            "retention_holds_until": stream.get("retention_holds_until"),
            "verified": False,
            "verification": "a stream cannot delete single records: its retention removes them by this time",
        }
        for stream in manifest.streams
    ]
    locations += [
        _analytics_location(a, (roots or {}).get("analytics", ""))
        for a in sorted(analytics, key=lambda a: a.task.folder)
    ]
    locations += [_table_location(t) for t in sorted(tables, key=lambda t: t.task.uri)]
    locations += [
        {"kind": "api", **{k: v for k, v in d.items() if k != "request_id"}} for d in (*api_done, *api_failed)
    ]
    status = receipt_status(files, api_failed, analytics, verification, tables)
    return {
        "request_id": manifest.request_id,
        "subject_hash": hasher.hash(manifest.subject_ids[0]),
        "alias_hashes": [hasher.hash(s) for s in manifest.subject_ids[1:]],
        "regulation": manifest.regulation,
        "deadline": manifest.deadline,
        "purge_run": run_id,
        "status": status,
        "records_removed": {
            kind: sum(loc["records_removed"] for loc in locations if loc["kind"] == kind)
            for kind in ("archive_partition", "index", "deadletter")
        },
        "locations": locations,
        "verification": _relative_paths(verification, roots or {}),
        "completed_at": at if status == "verified" else None,
    }
