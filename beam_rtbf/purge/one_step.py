"""A small purge as one Beam step: the same work as the wide graph, without its fixed cost.

The wide graph (``pipeline.py``) spreads files over workers and waits on side inputs
between stages; on the local runner each of its ~11 stages costs ~60 ms before any work,
so a purge of one request paid ~0.7 s for the graph whatever the archive. A plan of at
most ``--one_step_max_files`` files and no erasure API (its calls are rate-limited and
retried by their own transform) runs as one element through one DoFn that calls the same
functions in the same order:

    scan every planned file -> the guard's one decision (written down) -> rewrite the files
    (archive files as the scan read them, kept up to ``KEEP_SCANNED_BYTES``, if unchanged)
    -> list and re-read every stored file (the independent verification) -> recompute the
    analytics windows and tables -> per request: receipt, audit lines, registry timeline

Rewrites run on a few threads: Arrow reads, encodes and compresses outside the GIL.
The verification, as in the wide graph, lists the storage after the last rewrite and
does not take the plan's word for anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.purge.analytics import recompute_windows
from beam_rtbf.purge.analytics_table import recompute_table
from beam_rtbf.purge.finish import RequestFinisher, requests_of_result
from beam_rtbf.purge.manifests import PendingManifest
from beam_rtbf.purge.plan import GuardDecision, PurgePlan, judge_blast_radius
from beam_rtbf.purge.rewrite import FileResult, ReadBudget, rewrite_or_error, scan_and_keep
from beam_rtbf.purge.verify import VerificationSummary, verify_stored_files
from beam_rtbf.sinks.files import join

__all__ = ["PurgeInOneStep", "RewriteCounters", "fits_one_step", "REWRITE_THREADS"]

REWRITE_THREADS = min(4, os.cpu_count() or 1)
KEEP_SCANNED_BYTES = 256 << 20  # archive files the scans read are kept for their rewrites up to this much


class RewriteCounters:
    """The purge's rewrite metrics, counted from finished results in the bundle's own thread (Beam's
    metric containers are per thread, and the rewrites run on a pool)."""

    def __init__(self) -> None:
        self._removed = Metrics.counter(rtbf_metrics.NAMESPACE, "purge_records_removed")
        self._files = Metrics.counter(rtbf_metrics.NAMESPACE, "purge_files_rewritten")

    def count(self, results: Iterable[FileResult]) -> None:
        for result in results:
            if result.status == "purged":
                self._files.inc()
                self._removed.inc(result.records_before - result.records_after)


def fits_one_step(plan: PurgePlan, max_files: int, erasure_api: bool) -> bool:
    return 0 < len(plan.tasks) <= max_files and not erasure_api


class PurgeInOneStep(beam.DoFn):
    """The element is ignored: the plan, the manifests and the places travel with the DoFn.

    ``reports``: called with the guard decision and with the verification summary, to write
    them where the wide graph writes them (``pipeline._write_guard_report``, ...).
    """

    def __init__(
        self,
        plan: PurgePlan,
        manifests: Sequence[PendingManifest],
        guard: tuple[float, float, int, bool],
        places: Mapping[str, str],
        run_id: str,
        registry_url: str,
        purge_versions: bool,
        key_file: str | None,
        roots: Mapping[str, str],
        reports: tuple[Callable[[GuardDecision], None], Callable[[VerificationSummary], None]],
        write_audit: Callable[[list[dict]], None],
    ) -> None:
        self._plan = plan
        self._manifests = list(manifests)
        self._guard = guard
        self._places = dict(places)
        self._run_id = run_id
        self._finisher_args = (
            {m.request_id: m for m in manifests},
            registry_url,
            places["receipts"],
            run_id,
            purge_versions,
            key_file,
            dict(roots),
        )
        self._purge_versions = purge_versions
        self._reports = reports
        self._write_audit = write_audit
        self._counters = RewriteCounters()

    def process(self, unused) -> Iterable[None]:
        del unused
        plan, places = self._plan, self._places
        all_requests = tuple(m.request_id for m in self._manifests)
        budget = ReadBudget(KEEP_SCANNED_BYTES)
        with ThreadPoolExecutor(REWRITE_THREADS, thread_name_prefix="purge-rewrite") as pool:
            reads = list(pool.map(lambda task: scan_and_keep(task, plan.id_requests, budget), plan.tasks))
            scans, kept = [scan for scan, _ in reads], [read for _, read in reads]
            del reads
            max_partition_share, max_total_share, min_partition_records, confirmed = self._guard
            decision = judge_blast_radius(
                scans, plan.archive_records, max_partition_share, max_total_share, min_partition_records, confirmed
            )
            self._reports[0](decision)  # written down before any rewrite
            journal, reason = join(places["receipts"], "_journal"), "; ".join(decision.reasons)
            results = list(
                pool.map(
                    lambda task, scanned: rewrite_or_error(
                        task, plan.id_requests, journal, decision.allowed, reason, self._purge_versions, scanned
                    ),
                    plan.tasks,
                    kept,
                )
            )
            del kept
        self._counters.count(results)
        # Not the plan's file list: the storage is listed and re-read now that every rewrite is done.
        verification = verify_stored_files(
            plan.archive_dir or places["archive"],
            places["deadletter"],
            {m.request_id: m.subject_ids for m in self._manifests},
        )
        self._reports[1](verification)
        groups: dict[str, dict[str, list[Any]]] = {
            r: {"files": [], "analytics": [], "tables": []} for r in all_requests
        }
        for result in results:
            for request_id in requests_of_result(result, all_requests):
                groups[request_id]["files"].append(result)
        for kind, tasks, recompute in (
            ("analytics", plan.analytics_tasks, recompute_windows),
            ("tables", plan.table_tasks, recompute_table),
        ):
            for task in tasks:  # after every rewrite, as the wide graph's side input waits
                recomputed = recompute(task, plan.archive_dir, self._run_id, decision.allowed)
                for request_id in task.request_ids:
                    if request_id in groups:
                        groups[request_id][kind].append(recomputed)
        finisher = RequestFinisher(*self._finisher_args)
        try:
            audit = [
                row
                for request_id in all_requests
                for row in finisher.finish(request_id, groups[request_id], verification)
            ]
            finisher.flush()
        finally:
            finisher.close()
        self._write_audit(audit)
        return []
