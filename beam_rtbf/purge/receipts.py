"""Receipts and audit records: per request and location, what was removed, when, and the re-scan result.

Neither holds a subject id: the subject appears as a keyed hash only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from beam_rtbf.archive.index import relative_to
from beam_rtbf.purge.analytics import AnalyticsResult
from beam_rtbf.purge.hashing import SubjectHasher
from beam_rtbf.purge.manifests import PendingManifest
from beam_rtbf.purge.rewrite import FileResult
from beam_rtbf.records import iso_ms
from beam_rtbf.sinks.files import join, safe_file_name

__all__ = ["build_receipt", "receipt_status", "receipt_path"]


def receipt_path(receipts_dir: str, request_id: str) -> str:
    """Where a request's receipt lives: a name derived from the id, never the id itself."""
    return join(receipts_dir, safe_file_name(request_id))


def _file_location(result: FileResult, request_id: str, roots: Mapping[str, str]) -> dict:
    root = roots.get(result.task.kind, "")
    return {
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


def receipt_status(
    files: Sequence[FileResult], api_failures: Sequence[dict], analytics: Sequence[AnalyticsResult] = ()
) -> str:
    if any(r.status == "blocked" for r in files) or any(a.status == "blocked" for a in analytics):
        return "blocked"
    if any(not r.verified for r in files) or api_failures or any(not a.verified for a in analytics):
        return "incomplete"
    return "verified"


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
) -> dict:
    """``roots`` maps a file kind (archive, index, deadletter) to the root its paths are stored relative to."""
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
    locations += [
        {"kind": "api", **{k: v for k, v in d.items() if k != "request_id"}} for d in (*api_done, *api_failed)
    ]
    status = receipt_status(files, api_failed, analytics)
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
        "completed_at": at if status == "verified" else None,
    }
