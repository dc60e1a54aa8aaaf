"""``beam-rtbf purge``: the bounded Beam pipeline that erases history from pending manifests.

    manifests --(driver: check against the registry, plan files from the index)--> file tasks
    file tasks -> ScanFiles -> BlastRadius (one decision, a side input)
    file tasks -> RewriteFiles (guarded) -> per-request results
    after every rewrite: VerifyErasure lists and re-reads every stored file (not the plan's list)
    requests   -> CallErasureApi (optional, downstream systems)
    per request: receipts/, audit/, registry timeline (purged, verified), manifest redacted;
    ``verified`` only if that independent scan found none of the subject's records

The same graph runs on the local runner and, as a bounded job, on Spark or Flink.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.manifests.build import write_manifests
from beam_rtbf.options import Locations, RtbfOptions, locations, resolve_paths, subject_key_file
from beam_rtbf.purge.analytics import recompute_windows
from beam_rtbf.purge.hashing import SubjectHasher
from beam_rtbf.purge.manifests import ManifestProblem, PendingManifest, load_pending_manifests, redact_manifest
from beam_rtbf.purge.plan import GuardDecision, PurgePlan, judge_blast_radius, plan_purge
from beam_rtbf.purge.receipts import build_receipt, verification_problem
from beam_rtbf.purge.receipts import receipt_path as receipt_path_for
from beam_rtbf.purge.rewrite import FileResult, FileTask, PurgeFileError, rewrite_file, scan_file
from beam_rtbf.purge.verify import VerificationSummary, VerifyErasure, summary_json
from beam_rtbf.records import AcceptedRequest, iso_ms, now_ms
from beam_rtbf.registry import open_registry
from beam_rtbf.registry.base import RegistryUnavailable
from beam_rtbf.sinks.files import join, json_lines, unique_part, write_bytes_atomically
from beam_rtbf.sinks.ledger import RunInProgress, RunLedger

__all__ = ["PurgeOptions", "run_purge", "build_purge_pipeline", "validate_purge_options"]

_LOGGER = logging.getLogger(__name__)


class PurgeOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        # --output, the --<kind>_dir locations and --registry are RtbfOptions'.
        group = parser.add_argument_group("beam-rtbf purge")
        group.add_argument("--request_ids", default="", help="Comma-separated request ids (default: all pending)")
        group.add_argument(
            "--max_partition_share",
            type=float,
            default=0.5,
            help="Blast-radius guard: stop if a partition would lose more than this share of its records",
        )
        group.add_argument(
            "--max_total_share",
            type=float,
            default=0.05,
            help="Blast-radius guard: stop if the archive would lose more than this share of all records",
        )
        group.add_argument(
            "--guard_min_partition_records",
            type=int,
            default=100,
            help="Partitions smaller than this are judged by the archive-wide share only",
        )
        group.add_argument("--confirm", action="store_true", help="Purge even if the blast-radius guard objects")
        group.add_argument("--full_scan", action="store_true", help="Scan every archive file, not just indexed ones")
        group.add_argument(
            "--keep_old_versions",
            action="store_true",
            help="Do not delete noncurrent object versions of rewritten files (rely on a lifecycle rule)",
        )
        group.add_argument("--erasure_api_url", default="", help="HTTPS API to call per request (token from env)")
        group.add_argument("--erasure_api_action", default="delete", choices=("delete", "anonymize"))
        group.add_argument("--erasure_api_rate_per_s", type=float, default=10.0)
        group.add_argument("--erasure_api_max_attempts", type=int, default=6)


def validate_purge_options(opts: PurgeOptions) -> None:
    """Fail before planning anything, with a message that says how to fix it."""
    problems = []
    for name in ("max_partition_share", "max_total_share"):
        if not 0 < getattr(opts, name) <= 1:
            problems.append(f"--{name} must be in (0, 1]")
    if opts.guard_min_partition_records < 0:
        problems.append("--guard_min_partition_records must be >= 0")
    if opts.erasure_api_url:
        from beam_rtbf.purge.api_sink import TOKEN_ENV, check_api_url

        try:
            check_api_url(opts.erasure_api_url)
        except ValueError as exc:
            problems.append(str(exc))
        if not os.environ.get(TOKEN_ENV):
            problems.append(f"--erasure_api_url needs a bearer token in ${TOKEN_ENV}")
        if opts.erasure_api_rate_per_s <= 0:
            problems.append("--erasure_api_rate_per_s must be > 0")
        if opts.erasure_api_max_attempts < 1:
            problems.append("--erasure_api_max_attempts must be >= 1")
    if problems:
        raise ValueError("; ".join(problems))


class _RewriteFn(beam.DoFn):
    def __init__(self, id_requests: dict, journal_dir: str, purge_versions: bool) -> None:
        self._id_requests = id_requests
        self._journal_dir = journal_dir
        self._purge_versions = purge_versions
        self._removed = Metrics.counter(rtbf_metrics.NAMESPACE, "purge_records_removed")
        self._files = Metrics.counter(rtbf_metrics.NAMESPACE, "purge_files_rewritten")

    def process(self, task: FileTask, decision: GuardDecision):
        reason = "; ".join(decision.reasons)
        try:
            result = rewrite_file(
                task, self._id_requests, self._journal_dir, decision.allowed, reason, self._purge_versions
            )
        except PurgeFileError as exc:  # verification failed: the original stays in place
            result = FileResult(task, "error", 0, 0, {}, False, iso_ms(now_ms()), str(exc))
        if result.status == "purged":
            self._files.inc()
            self._removed.inc(result.records_before - result.records_after)
        yield result


def _recompute_after_rewrites(task, archive_dir: str, run_id: str, decision: GuardDecision, rewrites) -> Any:
    """``rewrites`` is only waited for: a side input is complete before this step starts."""
    del rewrites
    return recompute_windows(task, archive_dir, run_id, decision.allowed)


def _route(result: FileResult, all_requests: tuple[str, ...], id_requests: dict) -> list[tuple[str, FileResult]]:
    """Which requests a file result belongs to: those it removed records for, or all on block/error."""
    if result.status in ("blocked", "error"):
        return [(r, result) for r in all_requests]
    # ``removed`` may name requests of earlier runs (from the journal): only this run's are routed.
    return [(r, result) for r in sorted(result.removed) if r in all_requests]


class _FinishRequestFn(beam.DoFn):
    """Per request: receipt, audit lines, registry timeline, and the manifest redacted once verified."""

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
        self._key_file = key_file
        self._roots = roots
        self._manifests = manifests
        self._purge_versions = purge_versions
        self._registry_url = registry_url
        self._receipts_dir = receipts_dir
        self._run_id = run_id

    def setup(self) -> None:
        self._hasher = SubjectHasher(key_file=self._key_file)

    def process(self, element, verification: VerificationSummary):
        request_id, groups = element
        manifest: PendingManifest = self._manifests[request_id]
        files = list(groups["files"])
        at = iso_ms(now_ms())
        checked = verification.for_request(request_id)
        receipt = build_receipt(
            manifest,
            files,
            list(groups["api_done"]),
            list(groups["api_failed"]),
            self._hasher,
            self._run_id,
            at,
            list(groups["analytics"]),
            self._roots,
            checked,
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
        with open_registry(self._registry_url) as registry:
            if receipt["status"] == "verified":
                registry.record_event(request_id, "purged", now_ms(), detail)
                registry.record_event(request_id, "verified", now_ms(), f"receipt {receipt_name}")
            else:
                reasons = {
                    loc.get("verification") or loc.get("reason") or ""
                    for loc in receipt["locations"]
                    if loc["kind"] != "stream" and not loc.get("verified", False)
                }
                why = "; ".join([p for p in [verification_problem(checked)] if p] + sorted(reasons - {""}))
                registry.record_event(request_id, f"purge_{receipt['status']}", now_ms(), why[:500])
        if receipt["status"] == "verified":
            redact_manifest(manifest.path, self._hasher, receipt_name, self._purge_versions)
        for location in receipt["locations"]:
            yield {
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
        yield {
            "at": at,
            "run": self._run_id,
            "request_id": request_id,
            "subject_hash": receipt["subject_hash"],
            "event": "receipt",
            "status": receipt["status"],
            "receipt": receipt_name,
        }


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
        if self._rows:
            path = join(self._directory, unique_part(self._prefix, ".jsonl"))
            write_bytes_atomically(path, json_lines(self._rows))
            self._rows = []


def build_purge_pipeline(
    p: beam.Pipeline, opts: PurgeOptions, manifests: list[PendingManifest], plan: PurgePlan, run_id: str
) -> None:
    where, registry_url = _locations_and_registry(opts)
    receipts_dir = where.receipts
    all_requests = tuple(m.request_id for m in manifests)
    id_requests = plan.id_requests

    tasks = p | "FileTasks" >> beam.Create(list(plan.tasks)) | "SpreadFiles" >> beam.Reshuffle()
    scans = tasks | "ScanFiles" >> beam.Map(scan_file, id_requests)
    decision = (
        scans
        | "CollectScans" >> beam.combiners.ToList()
        | "BlastRadius"
        >> beam.Map(
            judge_blast_radius,
            plan.archive_records,
            opts.max_partition_share,
            opts.max_total_share,
            opts.guard_min_partition_records,
            opts.confirm,
        )
    )
    decision | "WriteGuardReport" >> beam.Map(_write_guard_report, receipts_dir, run_id)
    results = tasks | "RewriteFiles" >> beam.ParDo(
        _RewriteFn(id_requests, join(receipts_dir, "_journal"), not opts.keep_old_versions),
        decision=beam.pvalue.AsSingleton(decision),
    )
    files_by_request = results | "ByRequest" >> beam.FlatMap(_route, all_requests, id_requests)
    # Not the plan's file list: the storage is listed and re-read once every rewrite is done.
    verification = results | "VerifyErasure" >> VerifyErasure(
        plan.archive_dir or where.archive, where.deadletter, {m.request_id: m.subject_ids for m in manifests}
    )
    verification | "WriteVerificationReport" >> beam.Map(_write_verification_report, receipts_dir, run_id)
    # Analytics windows are recomputed from the archive once every rewrite is done (the side input waits).
    analytics = (
        p
        | "AnalyticsTasks" >> beam.Create(list(plan.analytics_tasks))
        | "RecomputeWindows"
        >> beam.Map(
            _recompute_after_rewrites,
            plan.archive_dir,
            run_id,
            decision=beam.pvalue.AsSingleton(decision),
            rewrites=beam.pvalue.AsList(results),
        )
        | "AnalyticsByRequest" >> beam.FlatMap(lambda r: [(q, r) for q in r.task.request_ids if q in all_requests])
    )

    requests = p | "Requests" >> beam.Create(
        [{"request_id": m.request_id, "subject_ids": list(m.subject_ids)} for m in manifests]
    )
    keyed_requests = requests | "KeyRequests" >> beam.Map(lambda r: (r["request_id"], r["request_id"]))
    groups: dict[str, Any] = {"request": keyed_requests, "files": files_by_request, "analytics": analytics}
    if opts.erasure_api_url:
        from beam_rtbf.purge.api_sink import CallErasureApi

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
    else:
        groups["api_done"] = p | "NoApiDone" >> beam.Create([])
        groups["api_failed"] = p | "NoApiFailed" >> beam.Create([])
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
                {
                    "archive": where.archive,
                    "index": where.archive,
                    "deadletter": where.deadletter,
                    "analytics": where.analytics,
                },
            ),
            verification=beam.pvalue.AsSingleton(verification),
        )
    )
    audit | "WriteAudit" >> beam.ParDo(_WriteJsonLinesFn(where.audit, f"purge-{run_id}"))


def _locations_and_registry(opts: PipelineOptions) -> tuple[Locations, str]:
    return locations(opts), opts.view_as(RtbfOptions).registry


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
    if FileSystems.exists(summary_path):  # the last run's input stream: its retention still holds the subject
        last = _read_json(summary_path)
        if last.get("sessions"):
            streams = [{"uri": last["sessions"], "stream": "sessions"}]
    _LOGGER.info("building manifests for %d accepted requests without one", len(missing))
    write_manifests(
        [(a, a.accepted_at_ms) for a in missing],
        where.manifests,
        where.archive,
        opts.window_s,
        streams,
        opts.stream_retention_s,
        replace=True,
    )


def _write_verification_report(summary: VerificationSummary, receipts_dir: str, run_id: str) -> None:
    write_bytes_atomically(join(receipts_dir, "_runs", f"{run_id}-verification.json"), summary_json(summary))


def _read_json(path: str) -> dict:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())


def run_purge(argv: list[str] | PipelineOptions | None = None) -> dict[str, Any]:
    """Plan, run and summarise one purge; returns (and writes) the run's summary."""
    from beam_rtbf.pipeline import resolve_runner

    options = argv if isinstance(argv, PipelineOptions) else PipelineOptions(argv)
    FileSystems.set_options(options)  # the driver reads manifests and the index itself (s3:// needs --s3_*)
    opts = options.view_as(PurgeOptions)
    resolve_paths(options)
    validate_purge_options(opts)
    standard = options.view_as(StandardOptions)
    standard.streaming = False
    where, registry_url = _locations_and_registry(options)
    # A bounded run still writing into this output would publish files after this purge verified:
    # refuse; a dead run's staged files are removed (a killed publish is finished) before planning.
    ledger = RunLedger.for_locations(options.view_as(RtbfOptions).output, where)
    try:
        ledger.recover()
    except RunInProgress as exc:
        raise SystemExit(f"beam-rtbf purge: {exc}") from exc
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    request_ids = [r.strip() for r in opts.request_ids.split(",") if r.strip()]
    try:
        with open_registry(registry_url) as registry:
            manifests, problems, done = load_pending_manifests(
                where.manifests, registry, request_ids, lambda missing: _build_manifests(missing, options, where)
            )
    except RegistryUnavailable as exc:
        raise SystemExit(f"beam-rtbf purge: deletion registry unavailable: {exc}") from exc
    for problem in problems:
        _LOGGER.error("skipping %s: %s", problem.path, problem.reason)
    summary: dict[str, Any] = {
        "run": run_id,
        "requests_pending": len(manifests),
        "manifests_already_done": done,
        "manifest_problems": [{"path": p.path, "reason": p.reason} for p in problems],
    }
    started = time.perf_counter()
    if manifests:
        plan = plan_purge(
            manifests,
            where.archive,
            where.deadletter,
            opts.full_scan,
            analytics_dir=where.analytics,
            journal_dir=join(where.receipts, "_journal"),
        )
        runner = resolve_runner(standard.runner, streaming=False)
        pipeline = beam.Pipeline(runner=runner, options=options)
        build_purge_pipeline(pipeline, opts, manifests, plan, run_id)
        result = pipeline.run()
        jar = options.view_as(PortableOptions).output_executable_path
        if jar:  # the plan is baked into the jar; spark-submit runs it and writes the receipts
            summary.update({"job_jar": jar, "files_planned": len(plan.tasks)})
            return summary
        result.wait_until_finish()
        guard = _read_json(join(where.receipts, "_runs", f"{run_id}-guard.json"))
        checked = _read_json(join(where.receipts, "_runs", f"{run_id}-verification.json"))
        receipts = [_read_json(receipt_path_for(where.receipts, m.request_id)) for m in manifests]
        statuses = [r["status"] for r in receipts]
        removed = sum(r["records_removed"]["archive_partition"] for r in receipts if r["purge_run"] == run_id)
        summary.update(
            {
                "files_planned": len(plan.tasks),
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
        )
    elapsed = time.perf_counter() - started
    summary["elapsed_s"] = round(elapsed, 3)
    write_bytes_atomically(
        join(where.receipts, "_runs", f"{run_id}-summary.json"), json.dumps(summary, indent=2).encode()
    )
    return summary


def purge_exit_code(summary: dict[str, Any]) -> int:
    """0 all verified; 3 stopped by the blast-radius guard; 1 anything left open or a bad manifest."""
    if summary.get("blocked"):
        return 3
    if summary.get("incomplete") or summary.get("manifest_problems"):
        return 1
    return 0


__all__ += ["purge_exit_code", "ManifestProblem"]
