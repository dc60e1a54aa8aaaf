"""The one beam-rtbf graph: ``build_pipeline`` builds it, ``run`` validates, runs and summarises.

    sessions  -> ParseSessions -> FilterSessions -> Analytics -> WriteAnalytics
                                                \\-> WriteArchive
    requests  -> ParseRequests -> RecordRequests -> (deletion set / keyed state) -> WriteManifests
    bad input -> WriteDeadLetters

Run it with the embedded defaults (generated data, SQLite registry, local files):

    beam-rtbf run
    beam-rtbf run --sessions 'file:///data/*.jsonl' --requests 'file:///data/requests.jsonl' --output out/
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.analytics.aggregate import WindowedAggregates, WriteAnalytics
from beam_rtbf.archive.write import WriteArchive
from beam_rtbf.filter.bloom import FilterSessionsByBloom, ToBloom
from beam_rtbf.filter.broadcast import (
    SUPPRESSED_TAG,
    BuildBoundedDeletionSet,
    BuildStreamingDeletionSet,
    FilterSessionsBySideInput,
)
from beam_rtbf.filter.keyed_state import EFFECTIVE_TAG, FilterSessionsInKeyedState
from beam_rtbf.filter.lookup import FilterSessionsByLookup
from beam_rtbf.manifests.build import WriteManifests
from beam_rtbf.options import RtbfOptions, locations, resolve_paths, validate_options
from beam_rtbf.parse.dedupe import DedupeSessions
from beam_rtbf.parse.request_events import RequestSelector
from beam_rtbf.parse.requests import ParseRequests
from beam_rtbf.parse.sessions import ParseSessions
from beam_rtbf.redact import mask_secrets
from beam_rtbf.registry import RegistryUnavailable, open_registry
from beam_rtbf.registry.record import CONFLICT_TAG, RecordRequests
from beam_rtbf.runner_names import EMBEDDED_PORTABLE, LOCAL_RUNNERS, LOCAL_STREAMING_RUNNERS
from beam_rtbf.sinks.files import WriteDeadLetters, join, write_bytes_atomically
from beam_rtbf.sinks.ledger import RunInProgress, RunLedger, input_fingerprint
from beam_rtbf.sources import Source, source_for

if TYPE_CHECKING:
    from beam_rtbf.local_runner import StopRequest

__all__ = ["GraphOutputs", "build_pipeline", "run", "choose_strategy", "resolve_runner", "read_source"]

_LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass
class GraphOutputs:
    """The PCollections tests and benchmarks assert on."""

    clean: beam.PCollection
    suppressed: beam.PCollection  # counts only: forgotten data is never emitted
    deadletter: beam.PCollection
    accepted: beam.PCollection
    effective: beam.PCollection  # (AcceptedRequest, effective_at_ms)
    analytics: beam.PCollection  # one list of rows per window pane
    archive_files: beam.PCollection
    manifests: beam.PCollection


def read_source(source: Source) -> beam.PTransform:
    """The bounded read of a bounded source, else the streaming read over its poller."""
    return source.read() if source.bounded else source.streaming_read()


def choose_strategy(
    requested: str, streaming: bool, runner_name: str, registry_size: int = 0, broadcast_max: int = 20_000_000
) -> tuple[str, str]:
    """(strategy, why). ``auto`` picks by runner and deletion-set size."""
    local_streaming = streaming and runner_name in LOCAL_STREAMING_RUNNERS
    embedded_streaming = streaming and runner_name == EMBEDDED_PORTABLE
    if requested != "auto":
        if local_streaming and requested in ("broadcast", "bloom"):
            raise ValueError(
                f"--filter_strategy={requested} needs a stream-fed side input, which blocks the local "
                "streaming runner; use state or lookup locally, or run on Flink"
            )
        if embedded_streaming and requested in ("broadcast", "bloom"):
            raise ValueError(
                f"--filter_strategy={requested} refreshes its side input from a PeriodicImpulse, which never "
                "ends on the embedded job service (FnApiRunner): the run would never finish nor write a window; "
                "use state or lookup there, or a real job service (--job_endpoint=HOST:PORT)"
            )
        return requested, "chosen by --filter_strategy"
    big = registry_size > broadcast_max
    size = f"{registry_size:,} forgotten ids ({registry_size * 8 / 1e6:.0f} MB as an exact set)"
    if local_streaming:
        return "state", "local streaming: stream-fed side inputs block the BundleBasedDirectRunner; keyed state streams"
    if embedded_streaming:
        return "state", "streaming on the embedded job service: a PeriodicImpulse side input never ends there"
    if not streaming:
        if big:
            return "bloom", f"bounded run, {size} > --broadcast_max_subjects: Bloom side input, registry confirms"
        return "broadcast", f"bounded run, {size}: the whole deletion set as of the run is one side input"
    if big:
        return "lookup", f"streaming, {size} > --broadcast_max_subjects: one registry query per batch"
    return "broadcast", f"streaming on a portable runner, {size}: slowly updating side input refreshed by deltas"


def resolve_runner(name: str | None, streaming: bool, stop: StopRequest | None = None):
    """Map a runner name to a runner; the local ones never try to download anything.

    ``stop`` reaches the local streaming runner, which ends its reads and drains when it is set.
    """
    if name in (None, "", "direct", "DirectRunner", "SwitchingDirectRunner"):
        if streaming:
            from beam_rtbf.local_runner import LocalStreamingRunner

            return LocalStreamingRunner(stop)
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return name


def build_pipeline(
    p: beam.Pipeline,
    opts: RtbfOptions,
    *,
    streaming: bool,
    strategy: str,
    sessions: beam.PCollection | None = None,
    requests: beam.PCollection | None = None,
    run_id: str | None = None,
) -> GraphOutputs:
    """Build the graph on ``p``; ``sessions``/``requests`` replace the sources (tests use TestStream).

    With ``run_id`` archive, analytics and dead letters are staged for the run ledger to publish
    (``run`` does that for bounded runs); without it every file appears where and when it is written.
    """
    where = locations(opts)
    if sessions is None:
        sessions = p | "ReadSessions" >> read_source(source_for(opts.sessions, "sessions"))
    if requests is None:
        requests = p | "ReadRequests" >> read_source(source_for(opts.requests, "requests"))

    parsed_sessions = sessions | "ParseSessions" >> ParseSessions(opts.max_record_bytes)
    session_batches = parsed_sessions.sessions
    if opts.dedupe == "on" or (opts.dedupe == "auto" and streaming):
        session_batches = session_batches | "DedupeSessions" >> DedupeSessions(opts.state_shards, opts.dedupe_max_ids)
    selector = RequestSelector(
        tag_field=opts.request_tag_field,
        tag_values=tuple(v.strip() for v in opts.request_tag_values.split(",") if v.strip()),
        payload_field=opts.request_payload_field,
    )
    parsed_requests = requests | "ParseRequests" >> ParseRequests(selector, opts.max_record_bytes)
    recorded = parsed_requests.requests | "RecordRequests" >> RecordRequests(opts.registry, opts.registry_retry_s)
    accepted = recorded.accepted

    if strategy == "state":
        filtered = session_batches | "FilterSessions" >> FilterSessionsInKeyedState(
            accepted, opts.registry, opts.state_shards, opts.refresh_interval_s, opts.max_staleness_s
        )
        clean, suppressed, effective = filtered["clean"], filtered[SUPPRESSED_TAG], filtered[EFFECTIVE_TAG]
    elif strategy in ("broadcast", "bloom"):
        if streaming:
            view = p | "DeletionSet" >> BuildStreamingDeletionSet(
                opts.registry, opts.refresh_interval_s, opts.max_staleness_s
            )
            # Effective once the next refresh has picked it up: the bound is one interval.
            lag_ms = int(opts.refresh_interval_s * 1000)
        else:
            view = accepted | "DeletionSet" >> BuildBoundedDeletionSet(opts.registry)
            lag_ms = 0
        if strategy == "broadcast":
            filtered = session_batches | "FilterSessions" >> FilterSessionsBySideInput(
                view, opts.max_staleness_s if streaming else None
            )
        else:
            bloom = view | "ToBloom" >> ToBloom()
            filtered = session_batches | "FilterSessions" >> FilterSessionsByBloom(
                bloom, opts.registry, opts.registry_retry_s
            )
        clean, suppressed = filtered.clean, filtered[SUPPRESSED_TAG]
        effective = accepted | "EffectiveAt" >> beam.Map(lambda a, lag=lag_ms: (a, a.accepted_at_ms + lag))
    elif strategy == "lookup":
        # Bounded: no batch is looked up before this run's requests are all recorded.
        barrier = None if streaming else accepted | "AllRecorded" >> beam.combiners.Count.Globally()
        filtered = session_batches | "FilterSessions" >> FilterSessionsByLookup(
            opts.registry, opts.registry_retry_s, barrier
        )
        clean, suppressed = filtered.clean, filtered[SUPPRESSED_TAG]
        effective = accepted | "EffectiveAt" >> beam.Map(lambda a: (a, a.accepted_at_ms))
    else:
        raise ValueError(f"unknown filter strategy {strategy!r}")

    analytics = clean | "Analytics" >> WindowedAggregates(opts.window_s, opts.allowed_lateness_s, streaming)
    analytics | "WriteAnalytics" >> WriteAnalytics(where.analytics, run_id)
    archive_files = clean | "Archive" >> WriteArchive(where.archive, opts.archive_partition_s, run_id)
    streams = [{"uri": mask_secrets(opts.sessions), "stream": "sessions"}]  # manifests and receipts keep it
    manifests = effective | "Manifests" >> WriteManifests(
        where.manifests,
        where.archive,
        opts.window_s,
        streams,
        opts.stream_retention_s,
        opts.registry,
        opts.registry_retry_s,
    )
    deadletter = (
        parsed_sessions.deadletter,
        parsed_requests.deadletter,
        recorded[CONFLICT_TAG],
    ) | "AllDeadLetters" >> beam.Flatten()
    deadletter | "WriteDeadLetters" >> WriteDeadLetters(where.deadletter, run_id)
    return GraphOutputs(clean, suppressed, deadletter, accepted, effective, analytics, archive_files, manifests)


def collect_counters(result) -> dict[str, int]:
    """The run's ``rtbf`` counters (committed values where the runner has them)."""
    counters: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(rtbf_metrics.NAMESPACE))
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + int(value or 0)
    for dist in query["distributions"]:
        value = dist.committed if dist.committed is not None else dist.attempted
        if value is not None and value.count:
            counters[f"{dist.key.metric.name}_max"] = int(value.max)
            counters[f"{dist.key.metric.name}_mean"] = int(value.mean)
    return counters


def summarize(
    counters: dict[str, int],
    elapsed_s: float,
    runner: str,
    strategy: str,
    why: str,
    streaming: bool,
    opts: RtbfOptions,
    stopped_by: str | None = None,
) -> dict[str, Any]:
    c = counters.get
    sessions_in = c(rtbf_metrics.SESSIONS_IN, 0)
    summary = {
        "sessions_in": sessions_in,
        "clean": c(rtbf_metrics.SESSIONS_CLEAN, 0),
        "suppressed": c(rtbf_metrics.SESSIONS_SUPPRESSED, 0),
        "dead_lettered": c(rtbf_metrics.SESSIONS_DEAD_LETTERED, 0),
        "duplicates": c(rtbf_metrics.SESSIONS_DUPLICATE, 0),
        "requests_in": c(rtbf_metrics.REQUESTS_IN, 0),
        "requests_accepted": c(rtbf_metrics.REQUESTS_ACCEPTED, 0),
        "requests_duplicate": c(rtbf_metrics.REQUESTS_DUPLICATE, 0),
        "requests_ignored": c(rtbf_metrics.REQUESTS_IGNORED, 0),
        "requests_dead_lettered": c(rtbf_metrics.REQUESTS_DEAD_LETTERED, 0),
        "manifests_written": c(rtbf_metrics.MANIFESTS_WRITTEN, 0),
        "archive_files": c(rtbf_metrics.ARCHIVE_FILES, 0),
        "archive_records": c(rtbf_metrics.ARCHIVE_RECORDS, 0),
        "analytics_rows": c(rtbf_metrics.ANALYTICS_ROWS, 0),
        "registry_errors": c(rtbf_metrics.REGISTRY_ERRORS, 0),
        "sessions_held": c(rtbf_metrics.SESSIONS_HELD, 0),
        "elapsed_s": round(elapsed_s, 3),
        "sessions_per_s": round(sessions_in / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "runner": runner,
        "mode": "streaming" if streaming else "bounded",
        "filter_strategy": strategy,
        "filter_strategy_reason": why,
        "sessions": mask_secrets(opts.sessions),
        "requests": mask_secrets(opts.requests),
        "registry": mask_secrets(opts.registry),
        "output": mask_secrets(opts.output),
        "stopped_by": stopped_by,  # SIGTERM / SIGINT when a streaming run was stopped and drained
    }
    if rtbf_metrics.EFFECTIVENESS_MS + "_max" in counters:
        summary["effectiveness_latency_ms_max"] = counters[rtbf_metrics.EFFECTIVENESS_MS + "_max"]
    summary["conservation_ok"] = sessions_in == (
        summary["clean"] + summary["suppressed"] + summary["dead_lettered"] + summary["duplicates"]
    )
    return summary


def check_registry(url: str, retry_s: float = 0.0) -> int:
    """The registry's size, waiting (retrying with backoff) up to ``retry_s`` for it to answer.

    Still unreachable then: ``RegistryUnavailable`` with one clear message naming the bound,
    before anything runs (``beam-rtbf run`` prints it and exits 2).
    """
    from beam_rtbf.registry.record import with_retries

    def size() -> int:
        with open_registry(url) as registry:
            return registry.size()

    try:
        return with_retries(size, retry_s)
    except RegistryUnavailable as exc:
        raise RegistryUnavailable(
            f"deletion registry unavailable after retrying for {retry_s:g} s (--registry_retry_s): {exc}"
        ) from exc


def _already_committed(done: dict[str, Any], opts: RtbfOptions) -> dict[str, Any]:
    """The summary of a re-run whose input a committed run already wrote: that run's figures, and why."""
    summary = dict(done.get("summary") or {})
    summary["already_committed"] = done["run_id"]
    summary["message"] = (
        f"this input was already committed into {opts.output} by run {done['run_id']} "
        f"(at {done.get('committed_at')}): nothing was read or written again. Use --append to add the same "
        "input a second time (its counts add up), or another --output"
    )
    write_bytes_atomically(join(opts.output, "summary.json"), json.dumps(summary, indent=2).encode())
    _LOGGER.info("beam-rtbf: %s", summary["message"])
    return summary


def run(argv: list[str] | PipelineOptions | None = None, stop: StopRequest | None = None) -> dict[str, Any]:
    """Validate options, build and run the graph, write and return ``summary.json``'s figures.

    ``stop``: on the local streaming runner, setting it ends the reads; the run drains, writes
    every output and the summary (``stopped_by``: the reason given) and returns normally.
    """
    options = argv if isinstance(argv, PipelineOptions) else PipelineOptions(argv)
    FileSystems.set_options(options)  # the driver's own file calls (s3:// needs --s3_* options) before the pipeline
    opts = options.view_as(RtbfOptions)
    resolve_paths(options)
    validate_options(opts)
    sessions_source = source_for(opts.sessions, "sessions")
    requests_source = source_for(opts.requests, "requests")
    standard = options.view_as(StandardOptions)
    streaming = bool(standard.streaming) or not (sessions_source.bounded and requests_source.bounded)
    standard.streaming = streaming
    runner = resolve_runner(standard.runner, streaming, stop)
    runner_name = runner if isinstance(runner, str) else type(runner).__name__
    if runner_name == "PortableRunner" and options.view_as(PortableOptions).job_endpoint == "embed":
        runner_name = EMBEDDED_PORTABLE
    for source in (sessions_source, requests_source):
        source.check()
    registry_size = check_registry(opts.registry, opts.registry_retry_s)
    strategy, why = choose_strategy(
        opts.filter_strategy, streaming, runner_name, registry_size, opts.broadcast_max_subjects
    )
    FileSystems.mkdirs(opts.output) if not FileSystems.exists(opts.output) else None
    jar = options.view_as(PortableOptions).output_executable_path
    # The run ledger needs a driver that sees the job end (it publishes then): bounded, waited for.
    committing = not streaming and not jar and not (opts.detach and runner_name not in LOCAL_RUNNERS)
    ledger, record = None, None
    if committing:
        where = locations(opts)
        ledger = RunLedger.for_locations(opts.output, where)
        try:
            ledger.recover()
        except RunInProgress as exc:
            raise SystemExit(f"beam-rtbf: {exc}") from exc
        inputs = [sessions_source.identity(), requests_source.identity()]
        done = None if opts.append else ledger.committed_with(input_fingerprint(inputs))
        if done is not None:
            return _already_committed(done, opts)
        record = ledger.begin(inputs, opts.append)
    elif not streaming:
        _LOGGER.warning(
            "beam-rtbf: bounded run without the run ledger (%s): files appear as written and a re-run "
            "of the same input adds its data again",
            "job jar" if jar else "detached",
        )
    _LOGGER.info(
        "beam-rtbf: %s run on %s, filter strategy %s (%s)",
        "streaming" if streaming else "bounded",
        runner_name,
        strategy,
        why,
    )

    pipeline = beam.Pipeline(runner=runner, options=options)
    build_pipeline(pipeline, opts, streaming=streaming, strategy=strategy, run_id=record and record["run_id"])
    started = time.perf_counter()
    result = pipeline.run()
    if jar:  # Flink/Spark: the job server wrote an executable jar instead of running (spark-submit runs it)
        return {"job_jar": jar, "runner": runner_name, "filter_strategy": strategy, "output": opts.output}
    if opts.detach and runner_name not in LOCAL_RUNNERS:  # a cluster streaming job never finishes
        job_id = getattr(result, "_job_id", None)  # the Job API's id: cancel, savepoint, state by it
        return {"detached": True, "runner": runner_name, "job_id": job_id, "state": str(result.state)}
    result.wait_until_finish()
    elapsed = time.perf_counter() - started
    stopped_by = stop.reason if stop is not None and stop.requested else None
    summary = summarize(collect_counters(result), elapsed, runner_name, strategy, why, streaming, opts, stopped_by)
    if ledger is not None and record is not None:
        summary["run_id"] = record["run_id"]
        summary["appended"] = bool(opts.append)
        publishing = time.perf_counter()
        ledger.publish(record, summary)  # the run's files become visible here, then the ledger says committed
        summary["publish_s"] = round(time.perf_counter() - publishing, 3)
    write_bytes_atomically(join(opts.output, "summary.json"), json.dumps(summary, indent=2).encode())
    return summary
