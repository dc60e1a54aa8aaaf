"""The last step of a purge, per request: receipt, audit lines, registry timeline, manifest redacted.

Plain code, so the purge's two graph shapes (``pipeline.py``: one Beam step per stage;
``one_step.py``: a small plan in one step) finish a request the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from beam_rtbf.purge.hashing import SubjectHasher
from beam_rtbf.purge.lock import check_held
from beam_rtbf.purge.manifests import PendingManifest, redact_manifest
from beam_rtbf.purge.receipts import build_receipt, verification_problem
from beam_rtbf.purge.receipts import receipt_path as receipt_path_for
from beam_rtbf.purge.rewrite import FileResult
from beam_rtbf.purge.verify import VerificationSummary
from beam_rtbf.records import iso_ms, now_ms
from beam_rtbf.registry import open_registry
from beam_rtbf.sinks.files import write_bytes_atomically

__all__ = ["RequestFinisher", "requests_of_result"]


def requests_of_result(result: FileResult, all_requests: Sequence[str]) -> list[str]:
    """Which of this run's requests a file result belongs to: those it removed records for, or all
    of them when the file was blocked or failed."""
    if result.status in ("blocked", "error"):
        return list(all_requests)
    # ``removed`` may name requests of earlier runs (from the journal): only this run's are routed.
    return [r for r in sorted(result.removed) if r in all_requests]


class RequestFinisher:
    """``finish`` one request at a time, ``flush`` after a batch of them, ``close`` at the end.

    The registry's events and the manifests' redactions wait for ``flush``: one registry
    transaction for the batch (a commit each cost ~3 ms), events first, and a manifest is
    redacted only once its ``verified`` event is recorded.
    """

    def __init__(
        self,
        manifests: Mapping[str, PendingManifest],
        registry_url: str,
        receipts_dir: str,
        run_id: str,
        purge_versions: bool,
        key_file: str | None,
        roots: Mapping[str, str],
    ) -> None:
        self._manifests = manifests
        self._receipts_dir = receipts_dir
        self._run_id = run_id
        self._purge_versions = purge_versions
        self._roots = dict(roots)
        self._hasher = SubjectHasher(key_file=key_file)
        # Opened once, not per request: opening an embedded registry costs a commit (~25 ms here).
        self._registry = open_registry(registry_url)
        self._events: list[tuple[str, str, int, str]] = []
        self._redact: list[tuple[str, str]] = []

    def flush(self) -> None:
        if self._events:
            self._registry.record_events(self._events)
        for path, receipt_name in self._redact:  # only once its "verified" event is recorded
            redact_manifest(path, self._hasher, receipt_name, self._purge_versions)
        self._events, self._redact = [], []

    def discard(self) -> None:
        """Drop what a failed batch queued (a retried bundle finishes its requests again)."""
        self._events, self._redact = [], []

    def close(self) -> None:
        self._registry.close()

    def finish(
        self, request_id: str, groups: Mapping[str, Sequence[Any]], verification: VerificationSummary
    ) -> list[dict[str, Any]]:
        """The request's receipt written and its events queued; returns its audit lines.

        ``groups``: "files" (file results), "analytics" and "tables" (recomputed windows),
        "api_done" and "api_failed" (erasure API calls), each possibly absent.
        """
        check_held()  # taken over by another purge: no receipt of this one can be trusted
        manifest = self._manifests[request_id]
        files = list(groups.get("files", ()))
        at = iso_ms(now_ms())
        checked = verification.for_request(request_id)
        receipt = build_receipt(
            manifest,
            files,
            list(groups.get("api_done", ())),
            list(groups.get("api_failed", ())),
            self._hasher,
            self._run_id,
            at,
            list(groups.get("analytics", ())),
            self._roots,
            checked,
            list(groups.get("tables", ())),
        )
        receipt_path = receipt_path_for(self._receipts_dir, request_id)
        receipt_name = receipt_path.rsplit("/", 1)[-1]  # stored relative to the receipts root
        write_bytes_atomically(receipt_path, json.dumps(receipt, indent=2, sort_keys=True).encode())
        removed = receipt["records_removed"]
        detail = (
            f"archive {removed['archive_partition']} records, index {removed['index']}, "
            f"dead letters {removed['deadletter']}; verification scanned {checked['scanned']['rows']} rows in "
            f"{sum(v for k, v in checked['scanned'].items() if k.endswith('_files'))} files; run {self._run_id}"
        )
        if receipt["status"] == "verified":
            self._events += [
                (request_id, "purged", now_ms(), detail),
                (request_id, "verified", now_ms(), f"receipt {receipt_name}"),
            ]
            self._redact.append((manifest.path, receipt_name))
        else:
            reasons = {
                loc.get("verification") or loc.get("reason") or ""
                for loc in receipt["locations"]
                if loc["kind"] != "stream" and not loc.get("verified", False)
            }
            why = "; ".join([p for p in [verification_problem(checked)] if p] + sorted(reasons - {""}))
            self._events.append((request_id, f"purge_{receipt['status']}", now_ms(), why[:500]))
        audit = [
            {
                "at": at,
                "run": self._run_id,
                "request_id": request_id,
                "subject_hash": receipt["subject_hash"],
                "location_kind": location["kind"],
                "location": location.get("path") or location.get("uri") or location.get("location"),
                "records_removed": location.get("records_removed", 0),
                "sessions_before": location.get("sessions_before"),
                "sessions_after": location.get("sessions_after"),
                "verified": location.get("verified", False),
                "status": location.get("status"),
            }
            for location in receipt["locations"]
        ]
        audit.append(
            {
                "at": at,
                "run": self._run_id,
                "request_id": request_id,
                "subject_hash": receipt["subject_hash"],
                "event": "receipt",
                "status": receipt["status"],
                "receipt": receipt_name,
            }
        )
        return audit
