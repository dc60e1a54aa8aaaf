"""Pending purge manifests: derived from the registry, checked against it, redacted when done.

The registry is the source of truth: every request it accepted and has not
verified is pending, however it arrived (the requests stream, ``beam-rtbf
forget``, an API). A pending request without a manifest (a ``forget`` never
seen by a run) gets one now, built from the archive's subject index, so no
accepted request can be left out of a purge.

A manifest file is only trusted for a request the registry accepted, with the
same subject ids: a forged or stale manifest must never make the purge delete
another person's records. Bad manifest files are reported and delete nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence

from apache_beam.io.filesystems import FileSystems

from beam_rtbf.manifests.build import MANIFEST_VERSION, manifest_path
from beam_rtbf.purge.hashing import SubjectHasher
from beam_rtbf.records import AcceptedRequest, iso_ms, now_ms, parse_time_ms
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
    # (sink URI, its windows) for each analytics table (PostgreSQL) whose rows counted the subject
    analytics_tables: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = ()


@dataclasses.dataclass(frozen=True)
class ManifestProblem:
    path: str
    reason: str


def _manifest_files(manifest_dir: str) -> list[str]:
    pattern = join(manifest_dir, "*.json")
    return sorted(
        m.path for result in FileSystems.match([pattern]) for m in result.metadata_list if "/.tmp-" not in m.path
    )


def _parse(path: str, registry: DeletionRegistry, rebuilt: bool = False) -> PendingManifest | ManifestProblem | None:
    """A pending manifest, a problem, or None for a manifest already done (``rebuilt``: never done)."""
    if not FileSystems.exists(path):
        return ManifestProblem(path, "manifest missing")
    try:
        with FileSystems.open(path) as handle:
            body = json.loads(handle.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return ManifestProblem(path, f"corrupt manifest: not JSON ({exc})")
    if not isinstance(body, dict):
        return ManifestProblem(path, "corrupt manifest: not a JSON object")
    if body.get("status") == DONE_STATUS and not rebuilt:
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
        windows = _windows(locations.get("analytics_windows", []))
        tables = tuple((str(t["uri"]), _windows(t["windows"])) for t in locations.get("analytics_tables", []))
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
        analytics_tables=tables,
    )


def _windows(entries: list) -> tuple[tuple[int, int], ...]:
    windows = tuple((parse_time_ms(w["start"]), parse_time_ms(w["end"])) for w in entries)
    if any(end <= start for start, end in windows):
        raise ValueError("an analytics window ends before it starts")
    return windows


def load_pending_manifests(
    manifest_dir: str,
    registry: DeletionRegistry,
    request_ids: Sequence[str] | None = None,
    build_missing: Callable[[list[AcceptedRequest]], None] | None = None,
) -> tuple[list[PendingManifest], list[ManifestProblem], int]:
    """(pending manifests, problems, how many were already done).

    Pending: every request the registry accepted and has not verified (``build_missing``
    writes manifests for those without a usable one), plus manifests not yet redacted.
    """
    wanted = set(request_ids or ())
    pending: dict[str, PendingManifest] = {}
    problems: list[ManifestProblem] = []
    done = 0
    for path in _manifest_files(manifest_dir):
        parsed = _parse(path, registry)
        if parsed is None:
            done += 1
        elif isinstance(parsed, ManifestProblem):
            problems.append(parsed)
        elif wanted and parsed.request_id not in wanted:
            continue
        elif parsed.request_id in pending:
            # Two manifests for one request: the one under the request's own name wins.
            canonical = manifest_path(manifest_dir, parsed.request_id)
            keep, extra = (
                (parsed, pending[parsed.request_id]) if path == canonical else (pending[parsed.request_id], parsed)
            )
            pending[parsed.request_id] = keep
            problems.append(ManifestProblem(extra.path, f"second manifest for {parsed.request_id}: ignored"))
        else:
            pending[parsed.request_id] = parsed
    missing = [
        accepted
        for accepted in registry.requests()
        if (not wanted or accepted.request.request_id in wanted)
        and accepted.request.request_id not in pending
        and DONE_STATUS not in {e.status for e in registry.timeline(accepted.request.request_id)}
    ]
    if missing and build_missing is not None:
        build_missing(missing)
        for accepted in missing:
            parsed = _parse(manifest_path(manifest_dir, accepted.request.request_id), registry, rebuilt=True)
            if isinstance(parsed, PendingManifest):
                pending[parsed.request_id] = parsed
            elif isinstance(parsed, ManifestProblem):
                problems.append(parsed)
    elif missing:
        problems += [ManifestProblem("", f"request {a.request.request_id} has no manifest") for a in missing]
    return sorted(pending.values(), key=lambda m: m.request_id), problems, done


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
        from beam_rtbf.sinks.versions import purge_noncurrent_versions

        purge_noncurrent_versions(path)
