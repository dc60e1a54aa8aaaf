"""The one beam-rtbf graph: ``build_pipeline`` builds it; ``RunJob`` is what ``beam-rtbf run`` adds to the
shared driver steps (``job.run_job``); ``run`` runs it from flags or options and returns the summary.

    sessions  -> ParseSessions -> FilterSessions -> Analytics -> WriteAnalytics (-> WriteAnalyticsToPostgres)
                                                \\-> WriteArchive
    requests  -> ParseRequests -> RecordRequests -> (deletion set / keyed state) -> WriteManifests
    bad input -> WriteDeadLetters

Run it with the embedded defaults (generated data, SQLite registry, local files):

    beam-rtbf run
    beam-rtbf run --sessions 'file:///data/*.jsonl' --requests 'file:///data/requests.jsonl' --output out/
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions

from beam_rtbf.analytics.aggregate import WindowedAggregates, WriteAnalytics
from beam_rtbf.analytics.postgres import WriteAnalyticsToPostgres
from beam_rtbf.archive.write import WriteArchive
from beam_rtbf.filter.filter_sessions import FilterSessions
from beam_rtbf.filter.strategies import choose_strategy
from beam_rtbf.filter.strategy import FilterConfig
from beam_rtbf.job import detached, job_options, recover_ledger, run_job
from beam_rtbf.manifests.build import WriteManifests
from beam_rtbf.options import FlinkCheckpointOptions, RtbfOptions, locations, validate_options
from beam_rtbf.parse.dedupe import DedupeSessions
from beam_rtbf.parse.request_events import RequestSelector
from beam_rtbf.parse.requests import ParseRequests
from beam_rtbf.parse.sessions import ParseSessions
from beam_rtbf.redact import mask_secrets
from beam_rtbf.registry import RegistryUnavailable, open_registry
from beam_rtbf.registry.record import CONFLICT_TAG, RecordRequests
from beam_rtbf.runner_names import LOCAL_STREAMING_RUNNERS
from beam_rtbf.sinks.files import WriteDeadLetters, join
from beam_rtbf.sinks.ledger import RunLedger, input_fingerprint, new_run_id
from beam_rtbf.sinks.postgres import prepare_writer
from beam_rtbf.sources import Source, source_for
from beam_rtbf.sources.polling import ReadPacing
from beam_rtbf.summary import collect_counters, summarize

if TYPE_CHECKING:
    from apache_beam.runners.runner import PipelineResult

    from beam_rtbf.local_runner import StopRequest

__all__ = ["GraphOutputs", "build_pipeline", "run", "RunJob", "check_registry", "read_source"]

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


def read_source(source: Source, read_trace: str | None = None, pacing: ReadPacing = ReadPacing()) -> beam.PTransform:
    """The bounded read of a bounded source, else the streaming read over its poller."""
    if source.bounded:
        return source.read()
    return source.streaming_read(read_trace, pacing)


def archive_flush_s(opts: RtbfOptions, p: beam.Pipeline, streaming: bool, once: bool) -> int:
    """Seconds the archive gathers rows per partition before writing a file (0: a file per bundle).

    Default 5 on the local streaming runner, whose bundles are small (a file per bundle made ~2
    files a second at 100 K sessions/s); 1 with exactly-once outputs, which always gather; else 0
    (Prism and Flink without checkpoints write per bundle, as before)."""
    if not streaming:
        return 0
    if opts.archive_flush_s is not None:
        return max(opts.archive_flush_s, 1) if once else opts.archive_flush_s
    if once:
        return 1
    return 5 if type(p.runner).__name__ in LOCAL_STREAMING_RUNNERS else 0


def build_pipeline(
    p: beam.Pipeline,
    opts: RtbfOptions,
    *,
    streaming: bool,
    strategy: str,
    sessions: beam.PCollection | None = None,
    requests: beam.PCollection | None = None,
    run_id: str | None = None,
    sink_run_id: str | None = None,
) -> GraphOutputs:
    """Build the graph on ``p``; ``sessions``/``requests`` replace the sources (tests use TestStream).

    With ``run_id`` archive, analytics and dead letters are staged for the run ledger to publish
    (``run`` does that for bounded runs); without it every file appears where and when it is written.
    ``sink_run_id`` names this run's rows in ``--analytics_sink`` (default ``run_id``, else a new id:
    a writer whose rows count as written).
    """
    where = locations(opts)
    if sessions is None:
        sessions = p | "ReadSessions" >> read_source(
            source_for(opts.sessions, "sessions"),
            opts.read_trace,
            ReadPacing(call_s=opts.read_call_s, gather_s=opts.read_gather_s),
        )
    if requests is None:
        # A request is accepted (registry commit) and sent on only when its read's call ends: the
        # requests read ends its call on data, effectiveness latency is measured from there.
        requests = p | "ReadRequests" >> read_source(
            source_for(opts.requests, "requests"),
            opts.read_trace,
            ReadPacing(call_s=opts.read_call_s, end_call_on_data=True),
        )

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

    filtered = session_batches | "FilterSessions" >> FilterSessions(
        strategy, accepted, FilterConfig.from_options(opts), streaming=streaming
    )
    clean, suppressed, effective = filtered

    # Written once per checkpoint under content names, so a resumed Flink job duplicates nothing.
    once = opts.view_as(FlinkCheckpointOptions).exactly_once(streaming)
    analytics = clean | "Analytics" >> WindowedAggregates(opts.window_s, opts.allowed_lateness_s, streaming)
    analytics | "WriteAnalytics" >> WriteAnalytics(where.analytics, run_id, exactly_once=once)
    if opts.analytics_sink:
        writer = sink_run_id or run_id or new_run_id()
        analytics | "WriteAnalyticsToPostgres" >> WriteAnalyticsToPostgres(opts.analytics_sink, writer)
    archive_files = clean | "Archive" >> WriteArchive(
        where.archive,
        opts.archive_partition_s,
        run_id,
        exactly_once=once,
        flush_s=archive_flush_s(opts, p, streaming, once),
    )
    streams = [{"uri": mask_secrets(opts.sessions), "stream": "sessions"}]  # manifests and receipts keep it
    manifests = effective | "Manifests" >> WriteManifests(
        where.manifests,
        where.archive,
        opts.window_s,
        streams,
        opts.stream_retention_s,
        opts.registry,
        opts.registry_retry_s,
        opts.analytics_sink,
    )
    deadletter = (
        parsed_sessions.deadletter,
        parsed_requests.deadletter,
        recorded[CONFLICT_TAG],
    ) | "AllDeadLetters" >> beam.Flatten()
    deadletter | "WriteDeadLetters" >> WriteDeadLetters(where.deadletter, run_id, exactly_once=once)
    return GraphOutputs(clean, suppressed, deadletter, accepted, effective, analytics, archive_files, manifests)


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
    _LOGGER.info("beam-rtbf: %s", summary["message"])
    return summary


class RunJob:
    """``beam-rtbf run`` for ``run_job``: checks the sources and registry, picks the filter strategy,
    stages a bounded run's files in the run ledger and publishes them once the job has finished."""

    command = "run"
    detachable = True

    def __init__(self, options: PipelineOptions) -> None:
        """``options`` as ``job_options`` returns them; validated here, before anything is read."""
        self.options = options
        self.opts = options.view_as(RtbfOptions)
        validate_options(self.opts)
        self.sources = (source_for(self.opts.sessions, "sessions"), source_for(self.opts.requests, "requests"))
        standard = options.view_as(StandardOptions)
        self.streaming = bool(standard.streaming) or not all(source.bounded for source in self.sources)
        standard.streaming = self.streaming
        self.runner = ""
        self.strategy, self.why = "", ""
        self.ledger: RunLedger | None = None
        self.record: dict[str, Any] | None = None
        self.sink_run_id: str | None = None  # this run's writer id in --analytics_sink

    def prepare(self, runner_name: str) -> dict[str, Any] | None:
        """Sources and registry answer, strategy chosen, ledger settled; the summary if already committed."""
        opts = self.opts
        self.runner = runner_name
        for source in self.sources:
            source.check()
        registry_size = check_registry(opts.registry, opts.registry_retry_s)
        checkpoints = self.options.view_as(FlinkCheckpointOptions).checkpointing_interval is not None
        self.strategy, self.why = choose_strategy(
            opts.filter_strategy, self.streaming, runner_name, registry_size, opts.broadcast_max_subjects, checkpoints
        )
        FileSystems.mkdirs(opts.output) if not FileSystems.exists(opts.output) else None
        jar = self.options.view_as(PortableOptions).output_executable_path
        # The run ledger needs a driver that sees the job end (it publishes then): bounded, waited for.
        if self.streaming:
            return self._prepare_sink()
        if jar or detached(self.options, runner_name):
            _LOGGER.warning(
                "beam-rtbf: bounded run without the run ledger (%s): files appear as written and a re-run "
                "of the same input adds its data again",
                "job jar" if jar else "detached",
            )
            return self._prepare_sink()
        self.ledger = RunLedger.for_locations(opts.output, locations(opts))
        recover_ledger(self.ledger)
        inputs = [source.identity() for source in self.sources]
        done = None if opts.append else self.ledger.committed_with(input_fingerprint(inputs))
        if done is not None:
            return _already_committed(done, opts)
        run_id = new_run_id()
        self._prepare_sink(run_id, staged=True)  # before the record: a refused database leaves no run behind
        self.record = self.ledger.begin(inputs, opts.append, run_id, analytics_sink=opts.analytics_sink)
        return None

    def _prepare_sink(self, run_id: str | None = None, staged: bool = False) -> None:
        """The analytics database answers and has its tables; this run is registered there as a writer:
        staged (invisible until the ledger publishes) for a ledger run, else counted as written."""
        if self.opts.analytics_sink:
            self.sink_run_id = run_id or new_run_id()
            prepare_writer(self.opts.analytics_sink, self.sink_run_id, staged=staged)
        return None

    def describe(self) -> str:
        return f"filter strategy {self.strategy} ({self.why})"

    def build(self, pipeline: beam.Pipeline) -> None:
        run_id = self.record["run_id"] if self.record is not None else None
        build_pipeline(
            pipeline,
            self.opts,
            streaming=self.streaming,
            strategy=self.strategy,
            run_id=run_id,
            sink_run_id=self.sink_run_id,
        )

    def jar_summary(self, jar: str) -> dict[str, Any]:
        return {"job_jar": jar, "runner": self.runner, "filter_strategy": self.strategy, "output": self.opts.output}

    def finish(self, result: PipelineResult, elapsed_s: float, stopped_by: str | None) -> dict[str, Any]:
        """The run's figures; a bounded run's staged files are published (made visible) here."""
        counters = collect_counters(result)
        summary = summarize(
            counters, elapsed_s, self.runner, self.strategy, self.why, self.streaming, self.opts, stopped_by
        )
        if self.ledger is not None and self.record is not None:
            summary["run_id"] = self.record["run_id"]
            summary["appended"] = bool(self.opts.append)
            publishing = time.perf_counter()
            self.ledger.publish(self.record, summary)  # the files become visible here, then "committed"
            summary["publish_s"] = round(time.perf_counter() - publishing, 3)
        return summary

    def summary_path(self) -> str:
        return join(self.opts.output, "summary.json")

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Nothing: a run writes new files only (the run ledger refuses a second bounded run)."""
        return contextlib.nullcontext()


def run(argv: list[str] | PipelineOptions | None = None, stop: StopRequest | None = None) -> dict[str, Any]:
    """Validate options, build and run the graph, write and return ``summary.json``'s figures.

    ``stop``: on the local streaming runner, setting it ends the reads; the run drains, writes
    every output and the summary (``stopped_by``: the reason given) and returns normally.
    """
    return run_job(RunJob(job_options(argv)), stop)
