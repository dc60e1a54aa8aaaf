"""Build and write one purge manifest per accepted request (DESIGN.md contract).

The archive's subject index tells which partition files hold the subject and
over which event times, which also names the analytics windows that counted
the subject before the request became effective. With ``--analytics_sink`` the
same windows' rows live in a PostgreSQL table too: ``analytics_tables`` names the
table (its URI holds no password) and the windows whose rows counted the subject.
Raw input streams keep the subject's records until their retention runs out; the
manifest says until when.

Manifests are named by request id and never overwritten, so a request seen
twice (or a re-run after a crash) yields exactly one manifest.

The request's ``suppressed`` timeline step is recorded before the manifest is
written and independently of whether it exists, idempotently (a step of that
status is appended once), so nothing is lost to a registry outage. Retry
policy: ``RegistryUnavailable`` is transient; the step retries with backoff up
to ``registry_retry_s``, then raises so the runner retries the bundle (or the
run fails and its re-run records the step); no manifest is written before its
step is recorded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.archive.index import FooterCache, lookup_archive_index, shared_footer_cache
from beam_rtbf.bundling import BundleDoFn
from beam_rtbf.records import AcceptedRequest, iso_ms
from beam_rtbf.sinks.files import join, safe_file_name, write_bytes_atomically

__all__ = [
    "build_manifest",
    "lookup_archive_index",
    "WriteManifests",
    "MANIFEST_VERSION",
    "manifest_path",
    "write_manifests",
]

MANIFEST_VERSION = 1


def manifest_path(manifests_dir: str, request_id: str) -> str:
    """Where a request's manifest lives: a name derived from the id, never the id itself."""
    return join(manifests_dir, safe_file_name(request_id))


def build_manifest(
    accepted: AcceptedRequest,
    effective_at_ms: int,
    index_rows: pa.Table,
    window_s: int,
    streams: Sequence[dict],
    stream_retention_s: int,
    analytics_sink: str | None = None,
) -> dict:
    """The manifest of one request; ``index_rows`` name archive files relative to the archive root."""
    request = accepted.request
    partitions: dict[str, dict] = {}
    windows: set[int] = set()
    window_ms = window_s * 1000
    per_kind: dict[tuple[str, str], int] = {}
    for row in index_rows.to_pylist():
        entry = partitions.setdefault(
            row["path"],
            {
                "path": row["path"],
                "records": 0,
                "min_event_ms": row["min_event_ms"],
                "max_event_ms": row["max_event_ms"],
            },
        )
        # A record can match by user id and by alias: count the largest per-kind total, a lower bound.
        key = (row["path"], row.get("id_kind") or "user_id")
        per_kind[key] = per_kind.get(key, 0) + row["records"]
        entry["records"] = max(entry["records"], per_kind[key])
        entry["min_event_ms"] = min(entry["min_event_ms"], row["min_event_ms"])
        entry["max_event_ms"] = max(entry["max_event_ms"], row["max_event_ms"])
        first = row["min_event_ms"] // window_ms
        last = row["max_event_ms"] // window_ms
        windows.update(range(first, min(last, first + 10_000) + 1))
    window_list = [{"start": iso_ms(w * window_ms), "end": iso_ms((w + 1) * window_ms)} for w in sorted(windows)]
    tables = []
    if analytics_sink and window_list:
        from beam_rtbf.sinks.postgres import parse_sink

        tables.append(
            {
                "uri": analytics_sink,
                "table": parse_sink(analytics_sink).label,
                "rows": "every (action_type, device_type) row of these windows",
                "windows": window_list,
            }
        )
    return {
        "manifest_version": MANIFEST_VERSION,
        "request_id": request.request_id,
        "subject_ids": list(request.subject_ids),
        "regulation": request.regulation,
        "kind": request.kind,
        "requested_at": iso_ms(request.requested_at_ms),
        "accepted_at": iso_ms(accepted.accepted_at_ms),
        "effective_at": iso_ms(effective_at_ms),
        "deadline": iso_ms(request.deadline_ms),
        "registry_version": accepted.version,
        "status": "pending",
        "locations": {
            "archive_partitions": [
                {
                    "path": p["path"],
                    "records": p["records"],
                    "min_event_time": iso_ms(p["min_event_ms"]),
                    "max_event_time": iso_ms(p["max_event_ms"]),
                }
                for p in sorted(partitions.values(), key=lambda p: p["path"])
            ],
            "analytics_windows": window_list,
            **({"analytics_tables": tables} if tables else {}),
            "streams": [
                {**stream, "retention_holds_until": iso_ms(effective_at_ms + stream_retention_s * 1000)}
                for stream in streams
            ],
        },
    }


def write_manifests(
    elements: Sequence[tuple[AcceptedRequest, int]],
    manifests_dir: str,
    archive_dir: str,
    window_s: int,
    streams: Sequence[dict],
    stream_retention_s: int,
    replace: bool = False,
    analytics_sink: str | None = None,
    footers: FooterCache | None = None,
) -> list[dict | None]:
    """Write the manifest of each (request, effective_at_ms); one archive-index scan for all.

    A manifest that exists is kept (one per request, ever: idempotent across duplicates and
    re-runs) unless ``replace``; returns the manifest written, or None, per element.
    ``footers``: index footers kept between calls (``archive/index.FooterCache``).
    """
    paths = [manifest_path(manifests_dir, accepted.request.request_id) for accepted, _ in elements]
    todo = [i for i, path in enumerate(paths) if replace or not FileSystems.exists(path)]
    outputs: list[dict | None] = [None] * len(elements)
    if not todo:
        return outputs
    subjects = sorted({s for i in todo for s in elements[i][0].request.subject_ids})
    index = lookup_archive_index(archive_dir, subjects, cache=footers)
    rows_of = _rows_by_identifier(index)
    files: dict[str, bytes] = {}
    for i in todo:
        accepted, effective_at_ms = elements[i]
        if paths[i] in files:
            continue
        found = sorted({row for s in accepted.request.subject_ids for row in rows_of.get(s, ())})
        rows = index.take(pa.array(found, pa.int64())) if found else index.slice(0, 0)
        manifest = build_manifest(
            accepted, effective_at_ms, rows, window_s, streams, stream_retention_s, analytics_sink
        )
        files[paths[i]] = json.dumps(manifest, indent=2, sort_keys=True).encode()
        outputs[i] = manifest
    _write_all(files)
    return outputs


def _rows_by_identifier(index: pa.Table) -> dict[str, list[int]]:
    """Index row numbers per identifier: a request's rows without a scan of the index per request."""
    rows: dict[str, list[int]] = {}
    if index.num_rows:
        for row, identifier in enumerate(index.column("user_id").to_pylist()):
            rows.setdefault(identifier, []).append(row)
    return rows


# Manifests are small files, each written, synced and renamed: on threads the waits overlap.
_WRITE_THREADS = 8


def _write_all(files: dict[str, bytes]) -> None:
    if len(files) <= 1:
        for path, data in files.items():
            write_bytes_atomically(path, data)
        return
    with ThreadPoolExecutor(min(_WRITE_THREADS, len(files)), thread_name_prefix="manifests") as pool:
        for done in [pool.submit(write_bytes_atomically, path, data) for path, data in files.items()]:
            done.result()  # the first failure is raised, after every write has ended


class _WriteManifestFn(BundleDoFn):
    """One archive-index scan per bundle of requests, then one manifest file per request."""

    def __init__(
        self,
        output_dir: str,
        archive_dir: str,
        window_s: int,
        streams: Sequence[dict],
        stream_retention_s: int,
        registry_url: str | None = None,
        registry_retry_s: float = 120.0,
        analytics_sink: str | None = None,
    ) -> None:
        self._analytics_sink = analytics_sink
        self._registry_url = registry_url
        self._registry_retry_s = registry_retry_s
        self._registry = None
        self._output_dir = output_dir
        self._archive_dir = archive_dir
        self._window_s = window_s
        self._streams = list(streams)
        self._stream_retention_s = stream_retention_s
        self._written = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.MANIFESTS_WRITTEN)

    def teardown(self) -> None:
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    def handle_batch(self, elements: Sequence[tuple[AcceptedRequest, int]]) -> list[list[dict]]:
        self._record_suppressed(elements)
        manifests = write_manifests(
            elements,
            self._output_dir,
            self._archive_dir,
            self._window_s,
            self._streams,
            self._stream_retention_s,
            analytics_sink=self._analytics_sink,
            # A streaming job adds an index file per flush; every bundle of requests looks in all of them.
            footers=shared_footer_cache(),
        )
        outputs: list[list[dict]] = [[] for _ in elements]
        for i, manifest in enumerate(manifests):
            if manifest is None:
                continue
            self._written.inc()
            outputs[i].append(manifest)
        return outputs

    def _record_suppressed(self, elements: Sequence[tuple[AcceptedRequest, int]]) -> None:
        """Each request's timeline gains 'suppressed' at its effective time, exactly once.

        Raises ``RegistryUnavailable`` once ``registry_retry_s`` has passed (transient: the
        bundle is retried, and no manifest of the bundle has been written yet)."""
        if not self._registry_url:
            return
        from beam_rtbf.registry import open_registry
        from beam_rtbf.registry.record import with_retries

        effective = {accepted.request.request_id: at_ms for accepted, at_ms in elements}

        def record() -> None:
            if self._registry is None:
                self._registry = open_registry(self._registry_url)
            self._registry.record_events_once(
                [
                    (request_id, "suppressed", at_ms, "filter drops the subject")
                    for request_id, at_ms in effective.items()
                ]
            )

        with_retries(record, self._registry_retry_s)


class WriteManifests(beam.PTransform):
    """(AcceptedRequest, effective_at_ms) -> ``manifests/<request_id>.json``; emits the manifests."""

    def __init__(
        self,
        output_dir: str,
        archive_dir: str,
        window_s: int,
        streams: Sequence[dict],
        stream_retention_s: int,
        registry_url: str | None = None,
        registry_retry_s: float = 120.0,
        analytics_sink: str | None = None,
    ) -> None:
        super().__init__()
        self._args = (
            output_dir,
            archive_dir,
            window_s,
            streams,
            stream_retention_s,
            registry_url,
            registry_retry_s,
            analytics_sink,
        )

    def expand(self, effective):
        return effective | "WriteManifestFiles" >> beam.ParDo(_WriteManifestFn(*self._args))
