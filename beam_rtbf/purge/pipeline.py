"""``beam-rtbf purge``: the bounded Beam pipeline that erases history from pending manifests.

    manifests --(driver: check against the registry, plan files from the index)--> file tasks
    file tasks -> ScanFiles -> BlastRadius (one decision, a side input)
    file tasks -> RewriteFiles (guarded) -> per-request results
    after every rewrite: VerifyErasure lists and re-reads every stored file (not the plan's list)
    requests   -> CallErasureApi (optional, downstream systems)
    per request: receipts/, audit/, registry timeline (purged, verified), manifest redacted;
    ``verified`` only if that independent scan found none of the subject's records

The same graph runs on the local runner and, as a bounded job, on Spark or Flink. A plan of at
most ``--one_step_max_files`` files without an erasure API runs as one step instead
(``one_step.py``: the same functions in the same order, without the stages' fixed cost).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_rtbf.bundling import BundleDoFn
from beam_rtbf.job import job_options, recover_ledger, run_job
from beam_rtbf.manifests.build import write_manifests
from beam_rtbf.options import Locations, PurgeOptions, RtbfOptions, locations, subject_key_file, validate_purge_options
from beam_rtbf.purge.analytics import recompute_windows
from beam_rtbf.purge.analytics_table import recompute_table
from beam_rtbf.purge.finish import RequestFinisher, requests_of_result
from beam_rtbf.purge.lock import PurgeLock, purge_lock
from beam_rtbf.purge.manifests import ManifestProblem, PendingManifest, load_pending_manifests
from beam_rtbf.purge.one_step import REWRITE_THREADS, PurgeInOneStep, RewriteCounters, fits_one_step
from beam_rtbf.purge.plan import GuardDecision, PurgePlan, judge_blast_radius, plan_purge
from beam_rtbf.purge.receipts import receipt_path as receipt_path_for
from beam_rtbf.purge.rewrite import FileResult, FileScan, FileTask, rewrite_or_error, scan_file
from beam_rtbf.purge.verify import VerificationSummary, VerifyErasure, summary_json
from beam_rtbf.records import AcceptedRequest
from beam_rtbf.registry import open_registry
from beam_rtbf.registry.base import RegistryUnavailable
from beam_rtbf.sinks.files import join, json_lines, unique_part, write_bytes_atomically
from beam_rtbf.sinks.ledger import RunLedger

if TYPE_CHECKING:
    from apache_beam.runners.runner import PipelineResult

__all__ = ["PurgeOptions", "PurgeJob", "run_purge", "build_purge_pipeline", "ManifestProblem"]

_LOGGER = logging.getLogger(__name__)


class _ScanFn(BundleDoFn):
    """``scan_file`` for a bundle's files, on ``REWRITE_THREADS`` threads (Arrow reads outside the GIL)."""

    max_batch = 256

    def __init__(self, id_requests: dict) -> None:
        self._id_requests = id_requests

    def handle_batch(self, tasks: Sequence[FileTask]) -> list[list[FileScan]]:
        with ThreadPoolExecutor(REWRITE_THREADS, thread_name_prefix="purge-scan") as pool:
            return [[scan] for scan in pool.map(lambda task: scan_file(task, self._id_requests), tasks)]


class _RewriteFn(BundleDoFn):
    """``rewrite_or_error`` for a bundle's files, on ``REWRITE_THREADS`` threads as in the one-step
    purge: Parquet reads, encodes and compression release the GIL, and a batch purge rewrites
    every file of the archive."""

    max_batch = 256

    def __init__(self, id_requests: dict, journal_dir: str, purge_versions: bool) -> None:
        self._id_requests = id_requests
        self._journal_dir = journal_dir
        self._purge_versions = purge_versions
        self._counters = RewriteCounters()

    def process(
        self, task: FileTask, decision: GuardDecision, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam
    ):
        self._decision = decision  # one singleton for the run
        yield from super().process(task, timestamp, window)

    def handle_batch(self, tasks: Sequence[FileTask]) -> list[list[FileResult]]:
        decision = self._decision
        reason = "; ".join(decision.reasons)

        def rewrite(task: FileTask) -> FileResult:
            return rewrite_or_error(
                task, self._id_requests, self._journal_dir, decision.allowed, reason, self._purge_versions
            )

        with ThreadPoolExecutor(REWRITE_THREADS, thread_name_prefix="purge-rewrite") as pool:
            results = list(pool.map(rewrite, tasks))
        self._counters.count(results)
        return [[result] for result in results]


def _recompute_after_rewrites(
    task, recompute: Callable[..., Any], archive_dir: str, run_id: str, decision: GuardDecision, rewrites
) -> Any:
    """``rewrites`` is only waited for: a side input is complete before this step starts."""
    del rewrites
    return recompute(task, archive_dir, run_id, decision.allowed)


def _recomputed_by_request(
    p: beam.Pipeline,
    labels: tuple[str, str, str],
    tasks: list,
    recompute: Callable[..., Any],
    plan: PurgePlan,
    run_id: str,
    decision: beam.PCollection,
    results: beam.PCollection,
    all_requests: tuple[str, ...],
) -> beam.PCollection | None:
    """(request id, result) for each analytics task (files or a table), recomputed once every rewrite is
    done and only if the guard let the purge through; None (no steps in the graph) without tasks."""
    if not tasks:
        return None
    create, step, by_request = labels
    return (
        p
        | create >> beam.Create(tasks)
        | step
        >> beam.Map(
            _recompute_after_rewrites,
            recompute,
            plan.archive_dir,
            run_id,
            decision=beam.pvalue.AsSingleton(decision),
            rewrites=beam.pvalue.AsList(results),
        )
        | by_request >> beam.FlatMap(lambda r: [(q, r) for q in r.task.request_ids if q in all_requests])
    )


def _route(result: FileResult, all_requests: tuple[str, ...]) -> list[tuple[str, FileResult]]:
    return [(r, result) for r in requests_of_result(result, all_requests)]


class _FinishRequestFn(beam.DoFn):
    """Per request: receipt, audit lines, registry timeline, and the manifest redacted once verified
    (``finish.RequestFinisher``; its registry events are recorded once per bundle)."""

    def __init__(
        self,
        manifests: dict,
        registry_url: str,
        receipts_dir: str,
        run_id: str,
        purge_versions: bool,
        key_file: str | None,
        roots: dict[str, str],
    ) -> None:
        self._args = (manifests, registry_url, receipts_dir, run_id, purge_versions, key_file, roots)

    def setup(self) -> None:
        self._finisher = RequestFinisher(*self._args)

    def start_bundle(self) -> None:
        self._finisher.discard()

    def finish_bundle(self) -> None:
        self._finisher.flush()

    def teardown(self) -> None:
        finisher = getattr(self, "_finisher", None)
        if finisher is not None:
            finisher.close()

    def process(self, element, verification: VerificationSummary):
        request_id, groups = element
        yield from self._finisher.finish(request_id, groups, verification)


class _WriteJsonLinesFn(beam.DoFn):
    """A bundle's rows as one JSON-lines file (audit records, API dead letters)."""

    def __init__(self, directory: str, prefix: str) -> None:
        self._directory = directory
        self._prefix = prefix

    def start_bundle(self) -> None:
        self._rows: list[dict] = []

    def process(self, row: dict) -> None:
        self._rows.append(row)

    def finish_bundle(self) -> None:
        _write_json_lines(self._directory, self._prefix, self._rows)
        self._rows = []


def _write_json_lines(directory: str, prefix: str, rows: list[dict]) -> None:
    if rows:
        write_bytes_atomically(join(directory, unique_part(prefix, ".jsonl")), json_lines(rows))


def build_purge_pipeline(
    p: beam.Pipeline, opts: PurgeOptions, manifests: list[PendingManifest], plan: PurgePlan, run_id: str
) -> None:
    where, registry_url = _locations_and_registry(opts)
    receipts_dir = where.receipts
    all_requests = tuple(m.request_id for m in manifests)
    id_requests = plan.id_requests
    roots = {
        "archive": where.archive,
        "index": where.archive,
        "deadletter": where.deadletter,
        "analytics": where.analytics,
    }
    if fits_one_step(plan, opts.one_step_max_files, bool(opts.erasure_api_url)):
        _ = (
            p
            | "Start" >> beam.Create([None])
            | "PurgeInOneStep"
            >> beam.ParDo(
                PurgeInOneStep(
                    plan,
                    manifests,
                    (opts.max_partition_share, opts.max_total_share, opts.guard_min_partition_records, opts.confirm),
                    {"receipts": receipts_dir, "archive": where.archive, "deadletter": where.deadletter},
                    run_id,
                    registry_url,
                    not opts.keep_old_versions,
                    subject_key_file(opts),
                    roots,
                    (
                        functools.partial(_write_guard_report, receipts_dir=receipts_dir, run_id=run_id),
                        functools.partial(_write_verification_report, receipts_dir=receipts_dir, run_id=run_id),
                    ),
                    functools.partial(_write_json_lines, where.audit, f"purge-{run_id}"),
                )
            )
        )
        return

    # One element that the singletons (the guard's decision) hang off: side inputs instead of global
    # combiners keep the graph (and its fixed cost on every runner) small.
    start = p | "Start" >> beam.Create([None])
    tasks = p | "FileTasks" >> beam.Create(list(plan.tasks)) | "SpreadFiles" >> beam.Reshuffle()
    scans = tasks | "ScanFiles" >> beam.ParDo(_ScanFn(id_requests))
    decision = start | "BlastRadius" >> beam.Map(
        _judge_and_report,
        beam.pvalue.AsList(scans),
        plan.archive_records,
        opts.max_partition_share,
        opts.max_total_share,
        opts.guard_min_partition_records,
        opts.confirm,
        receipts_dir,
        run_id,
    )
    results = tasks | "RewriteFiles" >> beam.ParDo(
        _RewriteFn(id_requests, join(receipts_dir, "_journal"), not opts.keep_old_versions),
        beam.pvalue.AsSingleton(decision),
    )
    files_by_request = results | "ByRequest" >> beam.FlatMap(_route, all_requests)
    # Not the plan's file list: the storage is listed and re-read once every rewrite is done.
    verification = results | "VerifyErasure" >> VerifyErasure(
        plan.archive_dir or where.archive, where.deadletter, {m.request_id: m.subject_ids for m in manifests}
    )
    verification | "WriteVerificationReport" >> beam.Map(_write_verification_report, receipts_dir, run_id)
    # Analytics windows (files, and PostgreSQL tables) are recomputed from the archive once every
    # rewrite is done (the side input waits).
    analytics = _recomputed_by_request(
        p,
        ("AnalyticsTasks", "RecomputeWindows", "AnalyticsByRequest"),
        list(plan.analytics_tasks),
        recompute_windows,
        plan,
        run_id,
        decision,
        results,
        all_requests,
    )
    tables = _recomputed_by_request(
        p,
        ("AnalyticsTableTasks", "RecomputeTableRows", "TablesByRequest"),
        list(plan.table_tasks),
        recompute_table,
        plan,
        run_id,
        decision,
        results,
        all_requests,
    )

    groups: dict[str, Any] = {
        "request": p | "Requests" >> beam.Create([(m.request_id, m.request_id) for m in manifests]),
        "files": files_by_request,
    }
    if analytics is not None:
        groups["analytics"] = analytics
    if tables is not None:
        groups["tables"] = tables
    if opts.erasure_api_url:
        from beam_rtbf.purge.api_sink import CallErasureApi

        requests = p | "ApiRequests" >> beam.Create(
            [{"request_id": m.request_id, "subject_ids": list(m.subject_ids)} for m in manifests]
        )
        api = requests | "CallErasureApi" >> CallErasureApi(
            opts.erasure_api_url,
            action=opts.erasure_api_action,
            rate_per_s=opts.erasure_api_rate_per_s,
            max_attempts=opts.erasure_api_max_attempts,
        )
        groups["api_done"] = api["done"] | "KeyApiDone" >> beam.Map(lambda d: (d["request_id"], d))
        groups["api_failed"] = api["deadletter"] | "KeyApiFailed" >> beam.Map(lambda d: (d["request_id"], d))
        # Outside deadletter/*.jsonl on purpose: those are raw records the purge scans; these hold no ids.
        api["deadletter"] | "WriteApiDeadLetters" >> beam.ParDo(
            _WriteJsonLinesFn(join(where.deadletter, "erasure_api"), f"purge-{run_id}")
        )
    audit = (
        groups
        | "JoinPerRequest" >> beam.CoGroupByKey()
        | "FinishRequests"
        >> beam.ParDo(
            _FinishRequestFn(
                {m.request_id: m for m in manifests},
                registry_url,
                receipts_dir,
                run_id,
                not opts.keep_old_versions,
                subject_key_file(opts),
                roots,
            ),
            verification=beam.pvalue.AsSingleton(verification),
        )
    )
    audit | "WriteAudit" >> beam.ParDo(_WriteJsonLinesFn(where.audit, f"purge-{run_id}"))


def _locations_and_registry(opts: PipelineOptions) -> tuple[Locations, str]:
    return locations(opts), opts.view_as(RtbfOptions).registry


def _judge_and_report(
    unused,
    scans: list,
    archive_records: int,
    max_partition_share: float,
    max_total_share: float,
    min_partition_records: int,
    confirmed: bool,
    receipts_dir: str,
    run_id: str,
) -> GuardDecision:
    """The guard's one decision for the whole batch (``judge_blast_radius``), written down before any rewrite."""
    del unused
    decision = judge_blast_radius(
        scans, archive_records, max_partition_share, max_total_share, min_partition_records, confirmed
    )
    _write_guard_report(decision, receipts_dir, run_id)
    return decision


def _write_guard_report(decision: GuardDecision, receipts_dir: str, run_id: str) -> None:
    report = {
        "run": run_id,
        "allowed": decision.allowed,
        "reasons": list(decision.reasons),
        "removing": decision.removing,
        "archive_records": decision.archive_records,
        "unreadable": list(decision.unreadable),
        "partitions": {k: {"removing": v[0], "records": v[1]} for k, v in sorted(decision.partitions.items())},
    }
    write_bytes_atomically(join(receipts_dir, "_runs", f"{run_id}-guard.json"), json.dumps(report, indent=2).encode())


def _build_manifests(missing: list[AcceptedRequest], options: PipelineOptions, where: Locations) -> None:
    """Manifests for accepted requests no run wrote one for (``forget``, an API, a request accepted
    while a run was going): the archive index names their files now."""
    opts = options.view_as(RtbfOptions)
    summary_path = join(opts.output, "summary.json")
    streams = []
    analytics_sink = opts.analytics_sink
    if FileSystems.exists(summary_path):  # the last run's input stream: its retention still holds the subject
        last = _read_json(summary_path)
        if last.get("sessions"):
            streams = [{"uri": last["sessions"], "stream": "sessions"}]
        # The last run's analytics table holds the subject's windows too, unless --analytics_sink says where.
        analytics_sink = analytics_sink or last.get("analytics_sink")
    _LOGGER.info("building manifests for %d accepted requests without one", len(missing))
    write_manifests(
        [(a, a.accepted_at_ms) for a in missing],
        where.manifests,
        where.archive,
        opts.window_s,
        streams,
        opts.stream_retention_s,
        replace=True,
        analytics_sink=analytics_sink,
    )


def _write_verification_report(summary: VerificationSummary, receipts_dir: str, run_id: str) -> None:
    write_bytes_atomically(join(receipts_dir, "_runs", f"{run_id}-verification.json"), summary_json(summary))


def _read_json(path: str) -> dict:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())


class PurgeJob:
    """``beam-rtbf purge`` for ``run_job``: loads the pending manifests (building missing ones), plans the
    files from the archive index, and summarises from the receipts the graph wrote."""

    command = "purge"
    streaming = False
    detachable = False  # its summary is read from the receipts: the driver waits for them

    def __init__(self, options: PipelineOptions) -> None:
        """``options`` as ``job_options`` returns them; validated here, before anything is read."""
        self.options = options
        self.opts = options.view_as(PurgeOptions)
        validate_purge_options(self.opts)
        options.view_as(StandardOptions).streaming = False
        self.where, self.registry_url = _locations_and_registry(options)
        self.run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
        self.manifests: list[PendingManifest] = []
        self.plan: PurgePlan | None = None
        self.summary: dict[str, Any] = {}  # the fields known once planned; ``finish`` adds the outcome
        self._started = 0.0

    def prepare(self, runner_name: str) -> dict[str, Any] | None:
        """Ledger settled, pending manifests loaded and planned; the summary if there is nothing to purge."""
        where = self.where
        # A bounded run still writing into this output would publish files after this purge verified:
        # refuse; a dead run's staged files are removed (a killed publish is finished) before planning.
        recover_ledger(RunLedger.for_locations(self.options.view_as(RtbfOptions).output, where))
        request_ids = [r.strip() for r in self.opts.request_ids.split(",") if r.strip()]
        try:
            with open_registry(self.registry_url) as registry:
                self.manifests, problems, done = load_pending_manifests(
                    where.manifests,
                    registry,
                    request_ids,
                    lambda missing: _build_manifests(missing, self.options, where),
                )
        except RegistryUnavailable as exc:
            raise RegistryUnavailable(f"deletion registry unavailable: {exc}") from exc
        for problem in problems:
            _LOGGER.error("skipping %s: %s", problem.path, problem.reason)
        self.summary = {
            "run": self.run_id,
            "runner": runner_name,  # the same plan on every runner; the summary says which ran it
            "requests_pending": len(self.manifests),
            "manifests_already_done": done,
            "manifest_problems": [{"path": p.path, "reason": p.reason} for p in problems],
        }
        self._started = time.perf_counter()  # the purge's elapsed_s counts its planning too
        if not self.manifests:
            return self._with_elapsed(self.summary)
        self.plan = plan_purge(
            self.manifests,
            where.archive,
            where.deadletter,
            self.opts.full_scan,
            analytics_dir=where.analytics,
            journal_dir=join(where.receipts, "_journal"),
        )
        return None

    def describe(self) -> str:
        assert self.plan is not None
        scope = "every archive file (--full_scan)" if self.opts.full_scan else "the files the index names"
        return f"run {self.run_id}: {len(self.manifests)} requests, {len(self.plan.tasks)} files planned from {scope}"

    def build(self, pipeline: beam.Pipeline) -> None:
        assert self.plan is not None
        build_purge_pipeline(pipeline, self.opts, self.manifests, self.plan, self.run_id)

    def jar_summary(self, jar: str) -> dict[str, Any]:
        """The plan is baked into the jar; spark-submit runs it and writes the receipts."""
        assert self.plan is not None
        return {**self.summary, "job_jar": jar, "files_planned": len(self.plan.tasks)}

    def finish(self, result: PipelineResult, elapsed_s: float, stopped_by: str | None) -> dict[str, Any]:
        """The purge's figures, read back from the guard report, the verification report and the receipts."""
        del result, elapsed_s, stopped_by  # the receipts hold the outcome; elapsed_s includes planning
        assert self.plan is not None
        where, run_id = self.where, self.run_id
        guard = _read_json(join(where.receipts, "_runs", f"{run_id}-guard.json"))
        checked = _read_json(join(where.receipts, "_runs", f"{run_id}-verification.json"))
        receipts = [_read_json(receipt_path_for(where.receipts, m.request_id)) for m in self.manifests]
        statuses = [r["status"] for r in receipts]
        removed = sum(r["records_removed"]["archive_partition"] for r in receipts if r["purge_run"] == run_id)
        summary = {
            **self.summary,
            "files_planned": len(self.plan.tasks),
            "guard": guard,
            "verified": statuses.count("verified"),
            "incomplete": sorted(r["request_id"] for r in receipts if r["status"] == "incomplete"),
            "blocked": sorted(r["request_id"] for r in receipts if r["status"] == "blocked"),
            "archive_records_removed": removed,
            "verification": {
                "scanned": checked["scanned"],
                "found": sum(checked["found"].values()),
                "unreadable": [u["path"] for u in checked["unreadable"]],
                "elapsed_s": checked["elapsed_s"],
                "scan_s": checked["scan_s"],
            },
        }
        return self._with_elapsed(summary)

    def summary_path(self) -> str:
        return join(self.where.receipts, "_runs", f"{self.run_id}-summary.json")

    def exclusive(self) -> contextlib.AbstractContextManager[PurgeLock]:
        """The archive's purge lock (``purge/lock.py``), from before the manifests are read until the
        receipts and the summary are written: two purges' rewrites would undo each other's."""
        return purge_lock(self.where.archive, self.run_id)

    def _with_elapsed(self, summary: dict[str, Any]) -> dict[str, Any]:
        return {**summary, "elapsed_s": round(time.perf_counter() - self._started, 3)}


def run_purge(argv: list[str] | PipelineOptions | None = None) -> dict[str, Any]:
    """Plan, run and summarise one purge; returns (and writes) the run's summary."""
    return run_job(PurgeJob(job_options(argv)))
