"""Pending purge manifests: load and check them against the registry, redact them when done.

A manifest is only trusted for a request the registry accepted, with the same
subject ids: a forged or stale manifest must never make the purge delete
another person's records. Bad manifests are reported and skipped; they delete
nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from apache_beam.io.filesystems import FileSystems

from beam_rtbf.manifests.build import MANIFEST_VERSION
from beam_rtbf.purge.hashing import SubjectHasher
from beam_rtbf.records import iso_ms, now_ms, parse_time_ms
from beam_rtbf.registry.base import DeletionRegistry
from beam_rtbf.sinks.files import join, write_bytes_atomically

__all__ = ["PendingManifest", "ManifestProblem", "load_pending_manifests", "redact_manifest", "DONE_STATUS"]

DONE_STATUS = "verified"


@dataclasses.dataclass(frozen=True)
class PendingManifest:
    path: str
    request_id: str
    subject_ids: tuple[str, ...]
    regulation: str
    deadline: str
    archive_paths: tuple[str, ...]
    streams: tuple[dict, ...]
    analytics_windows: tuple[tuple[int, int], ...] = ()  # (start_ms, end_ms) that counted the subject


@dataclasses.dataclass(frozen=True)
class ManifestProblem:
    path: str
    reason: str


def _manifest_files(manifest_dir: str) -> list[str]:
    pattern = join(manifest_dir, "*.json")
    return sorted(
        m.path for result in FileSystems.match([pattern]) for m in result.metadata_list if "/.tmp-" not in m.path
    )


def _parse(path: str, registry: DeletionRegistry) -> PendingManifest | ManifestProblem | None:
    """A pending manifest, a problem, or None for a manifest already done."""
    try:
        with FileSystems.open(path) as handle:
            body = json.loads(handle.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return ManifestProblem(path, f"corrupt manifest: not JSON ({exc})")
    if not isinstance(body, dict):
        return ManifestProblem(path, "corrupt manifest: not a JSON object")
    if body.get("status") == DONE_STATUS:
        return None
    if body.get("manifest_version") != MANIFEST_VERSION:
        return ManifestProblem(path, f"unsupported manifest_version {body.get('manifest_version')!r}")
    request_id, subject_ids = body.get("request_id"), body.get("subject_ids")
    if not isinstance(request_id, str) or not request_id:
        return ManifestProblem(path, "corrupt manifest: no request_id")
    if not isinstance(subject_ids, list) or not subject_ids or not all(isinstance(s, str) and s for s in subject_ids):
        return ManifestProblem(path, f"corrupt manifest for {request_id}: subject_ids must be a non-empty list")
    accepted = registry.get_request(request_id)
    if accepted is None:
        return ManifestProblem(path, f"unknown request {request_id!r}: not in the registry, refusing to purge for it")
    if set(subject_ids) != set(accepted.request.subject_ids):
        return ManifestProblem(path, f"manifest for {request_id} names other subject ids than the registry's request")
    locations = body.get("locations") or {}
    try:
        archive_paths = tuple(str(p["path"]) for p in locations.get("archive_partitions", []))
        streams = tuple(dict(s) for s in locations.get("streams", []))
        windows = tuple(
            (parse_time_ms(w["start"]), parse_time_ms(w["end"])) for w in locations.get("analytics_windows", [])
        )
        if any(end <= start for start, end in windows):
            raise ValueError("an analytics window ends before it starts")
    except (TypeError, KeyError, ValueError) as exc:
        return ManifestProblem(path, f"corrupt manifest for {request_id}: bad locations ({exc})")
    return PendingManifest(
        path=path,
        request_id=request_id,
        subject_ids=tuple(accepted.request.subject_ids),
        regulation=accepted.request.regulation,
        deadline=iso_ms(accepted.request.deadline_ms),
        archive_paths=archive_paths,
        streams=streams,
        analytics_windows=windows,
    )


def load_pending_manifests(
    manifest_dir: str, registry: DeletionRegistry, request_ids: Sequence[str] | None = None
) -> tuple[list[PendingManifest], list[ManifestProblem], int]:
    """(pending manifests, problems, how many were already done) in ``manifest_dir``."""
    pending: list[PendingManifest] = []
    problems: list[ManifestProblem] = []
    done = 0
    wanted = set(request_ids or ())
    for path in _manifest_files(manifest_dir):
        parsed = _parse(path, registry)
        if parsed is None:
            done += 1
        elif isinstance(parsed, ManifestProblem):
            problems.append(parsed)
        elif not wanted or parsed.request_id in wanted:
            pending.append(parsed)
    return pending, problems, done


def redact_manifest(path: str, hasher: SubjectHasher, receipt_path: str, purge_versions: bool = True) -> None:
    """Once verified, the manifest keeps keyed hashes of the ids instead of the ids themselves.

    In a versioned bucket the manifest's older version still names the ids: it goes too.
    """
    with FileSystems.open(path) as handle:
        body = json.loads(handle.read())
    body["subject_hashes"] = [hasher.hash(s) for s in body.pop("subject_ids", [])]
    body["status"] = DONE_STATUS
    body["verified_at"] = iso_ms(now_ms())
    body["receipt"] = receipt_path
    write_bytes_atomically(path, json.dumps(body, indent=2, sort_keys=True).encode())
    if purge_versions:
        from beam_rtbf.purge.versions import purge_noncurrent_versions

        purge_noncurrent_versions(path)
