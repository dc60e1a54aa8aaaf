"""The steps every beam-rtbf job shares around its graph: options, runner, ledger, run, wait, summary.

A job kind (``pipeline.RunJob``, ``purge.pipeline.PurgeJob``) says only what is its own: the
checks and planning before the graph, the graph, the summary. ``run_job`` does the rest, the
same way for ``run`` and ``purge``:

    options = job_options(argv)      # FileSystems set up for the driver's own reads, paths absolute
    summary = run_job(RunJob(options), stop)

It resolves the runner, lets the job prepare (a job may finish there: nothing to purge, input
already committed), logs one start line, runs the graph, returns at once for a job jar or a
detached cluster job, else waits and writes the job's summary. Printing and exit codes are the
CLI driver's (``driver.py``); the figures are ``summary.py``'s.

This module imports no job kind: both job modules import it, never each other.
"""

from __future__ import annotations

import logging
import shutil
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, PrismRunnerOptions, StandardOptions

from beam_rtbf.flink_local import LocalFlinkConf, is_flink_local, settle_checkpoint_options
from beam_rtbf.job_servers import provide_job_server_jar
from beam_rtbf.options import RtbfOptions, resolve_paths, with_cached_views
from beam_rtbf.prism import prism_binary
from beam_rtbf.runner_names import EMBEDDED_PORTABLE, LOCAL_RUNNERS, PRISM, PRISM_EXTERNAL
from beam_rtbf.sinks.ledger import RunInProgress, RunLedger
from beam_rtbf.stopping import RunStopping
from beam_rtbf.summary import without_unreported_figures, write_summary

if TYPE_CHECKING:
    from apache_beam.runners.runner import PipelineResult, PipelineRunner

    from beam_rtbf.local_runner import StopRequest

__all__ = [
    "Job",
    "OutputInUse",
    "job_options",
    "resolve_runner",
    "shorten_state_sampling",
    "use_local_prism",
    "runner_name",
    "recover_ledger",
    "detached",
    "run_job",
]

_LOGGER = logging.getLogger(__name__)

_DIRECT_NAMES = (None, "", "direct", "DirectRunner", "SwitchingDirectRunner")


class OutputInUse(ValueError):
    """A live run on this host writes into the same output: a user error (the CLI prints it, exits 2)."""


class Job(Protocol):
    """What one kind of job (``run``, ``purge``) adds to the shared steps of ``run_job``."""

    command: str  # "run" / "purge": named in the start line
    options: PipelineOptions
    streaming: bool
    detachable: bool  # may --detach leave it running on a cluster (run: yes; purge waits for its receipts)

    def prepare(self, runner_name: str) -> dict[str, Any] | None:
        """Checks and planning before the graph; a summary if the job is already done (written as is)."""
        ...

    def describe(self) -> str:
        """What the start line says after the runner: the strategy and why, or the plan."""
        ...

    def build(self, pipeline: beam.Pipeline) -> None:
        """Build the job's graph on ``pipeline``."""
        ...

    def jar_summary(self, jar: str) -> dict[str, Any]:
        """The summary when the job server wrote an executable jar instead of running."""
        ...

    def finish(self, result: PipelineResult, elapsed_s: float, stopped_by: str | None) -> dict[str, Any]:
        """The summary of the finished job (and whatever must follow it, e.g. publishing the run's files)."""
        ...

    def summary_path(self) -> str:
        """Where the summary is written."""
        ...

    def exclusive(self) -> AbstractContextManager[Any]:
        """Held from before ``prepare`` until the summary is written (purge: the archive's purge lock)."""
        ...


def job_options(argv: list[str] | PipelineOptions | None) -> PipelineOptions:
    """The job's PipelineOptions, ready for the driver: file systems configured, local paths absolute.

    ``FileSystems.set_options`` comes first: the driver reads and writes files itself before the
    pipeline starts (s3:// needs the --s3_* options then).
    """
    # Views cached: Beam asks for them hundreds of times while building and translating a graph.
    options = with_cached_views(argv if isinstance(argv, PipelineOptions) else PipelineOptions(argv))
    FileSystems.set_options(options)
    resolve_paths(options)
    return options


def resolve_runner(name: str | None, streaming: bool, stop: StopRequest | None = None) -> PipelineRunner | str:
    """Map a runner name to a runner; the local ones never try to download anything.

    The direct runner names mean FnApiRunner (bounded) or the local streaming runner, which gets
    ``stop`` (it ends its reads and drains when that is set); any other name goes to Beam as is.
    """
    shorten_state_sampling()
    if name in _DIRECT_NAMES:
        if streaming:
            from beam_rtbf.local_runner import LocalStreamingRunner

            return LocalStreamingRunner(stop)
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return name


STATE_SAMPLING_PERIOD_MS = 10


def shorten_state_sampling() -> None:
    """Bundles of the in-process SDK worker end when their work does, not up to 200 ms later.

    Beam's state sampler (a thread per bundle timing each step, for its msecs counters) sleeps
    between samples, its sleep growing to ``DEFAULT_SAMPLING_PERIOD_MS`` (200 ms) within a second,
    and a bundle's end joins that thread: a bundle of a second or more ends 0-200 ms after its
    last element (~0.1 s of a one-request purge). Beam has no option for the period, so the
    default of ``StateSampler`` is set, for samplers made from now on in this process (the
    FnApiRunner's worker, and LOOPBACK workers of the portable runners). Sampling every 10 ms
    costs nothing measurable.
    """
    from apache_beam.runners.worker import statesampler

    statesampler.StateSampler.__init__.__defaults__ = (STATE_SAMPLING_PERIOD_MS,)


def runner_name(runner: PipelineRunner | str, options: PipelineOptions) -> str:
    """The name summaries, strategy choice and --detach go by (the embedded job service has its own;
    Prism is ``PrismRunner`` when it runs here, ``PrismRunner[external]`` behind --job_endpoint)."""
    name = runner if isinstance(runner, str) else type(runner).__name__
    if name == "PortableRunner" and options.view_as(PortableOptions).job_endpoint == "embed":
        return EMBEDDED_PORTABLE
    if name == PRISM and options.view_as(PortableOptions).job_endpoint:
        return PRISM_EXTERNAL
    return name


def use_local_prism(options: PipelineOptions) -> None:
    """Point PrismRunner at a local binary (``--prism_location`` or a default place), in place.

    Beam would otherwise download a release binary. ValueError (a user error, one line, naming
    the ``go install`` command) when there is none. Nothing to do behind --job_endpoint.
    """
    if options.view_as(PortableOptions).job_endpoint:
        return
    prism = options.view_as(PrismRunnerOptions)
    prism.prism_location = prism_binary(prism.prism_location)


def recover_ledger(ledger: RunLedger) -> None:
    """Settle the output's unfinished runs before this job touches it; a live one is a user error.

    A dead run's staged files are removed and a killed publish is finished; a run still writing
    (on this host) would publish files under this job's feet, so the job refuses to start.
    """
    try:
        ledger.recover()
    except RunInProgress as exc:
        raise OutputInUse(str(exc)) from exc


def run_job(job: Job, stop: StopRequest | None = None) -> dict[str, Any]:
    """Run ``job`` to its summary (returned; written unless a jar or a detached job stands for it).

    ``stop``: on the local streaming runner, setting it ends the reads; the job drains, writes
    every output and its summary (``stopped_by``: the reason given) and returns normally.
    """
    with job.exclusive():
        return _run_job(job, stop)


def _run_job(job: Job, stop: StopRequest | None) -> dict[str, Any]:
    options = job.options
    runner = resolve_runner(options.view_as(StandardOptions).runner, job.streaming, stop)
    name = runner_name(runner, options)
    if name == PRISM:
        use_local_prism(options)
    done = job.prepare(name)
    if done is not None:
        write_summary(job.summary_path(), done)
        return done
    _LOGGER.info(
        "beam-rtbf: %s %s on %s, %s",
        "streaming" if job.streaming else "bounded",
        job.command,
        name,
        job.describe(),
    )
    provide_job_server_jar(options)  # flink-local / spark-local: the job server, fetched once
    flink_conf = local_flink_conf(options, job.streaming)
    pipeline = None
    try:
        stopping = RunStopping(stop, job.streaming, name, options, flink_conf.rest if flink_conf else None)
        pipeline = beam.Pipeline(runner=runner, options=options)
        job.build(pipeline)
        with stopping.around(pipeline) as run:
            started = time.perf_counter()
            result = run()
            jar = options.view_as(PortableOptions).output_executable_path
            if jar:  # Flink/Spark: the job server wrote an executable jar instead of running (spark-submit runs it)
                return job.jar_summary(jar)
            if job.detachable and detached(options, name):  # a cluster streaming job never finishes
                job_id = getattr(result, "_job_id", None)  # the Job API's id: cancel, savepoint, state by it
                return {"detached": True, "runner": name, "job_id": job_id, "state": str(result.state)}
            stopped = stopping.wait(result)
            elapsed = time.perf_counter() - started
    finally:
        if flink_conf is not None:
            flink_conf.close()
        if pipeline is not None:  # Beam removes its temporary folder only after a run, not a failed build
            shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)
    stopped_by = stop.reason if stop is not None and stop.requested else None
    summary = job.finish(result, elapsed, stopped_by)
    if stopped:
        summary = without_unreported_figures({**summary, **stopping.stopped_fields(result)})
    write_summary(job.summary_path(), summary)
    return summary


def local_flink_conf(options: PipelineOptions, streaming: bool) -> LocalFlinkConf | None:
    """A streaming flink-local run's own Flink configuration (REST on loopback, the restore path),
    after settling the Flink options checkpoints need (``flink_local.settle_checkpoint_options``)."""
    settle_checkpoint_options(options, streaming)
    if not (streaming and is_flink_local(options)):
        return None
    return LocalFlinkConf(options)


def detached(options: PipelineOptions, runner: str) -> bool:
    """--detach on a cluster runner: submit and return (a local runner's job would die with this process)."""
    return bool(options.view_as(RtbfOptions).detach) and runner not in LOCAL_RUNNERS
