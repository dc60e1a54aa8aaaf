"""How a run ends on SIGINT/SIGTERM, for each kind of runner it runs on.

The CLI's signal handler sets a ``StopRequest`` (``local_runner.py``); what honouring it takes
depends on where the job runs:

- the local streaming runner honours it itself: its reads end, the job drains;
- Prism, SDK workers in this process (LOOPBACK): the job's reads are given a token of the
  request (``sources.polling.stop_reads_on``); they end where they stand, the job drains;
- a job server's streaming job (``flink-local``, any Flink/Spark job server): nothing here can
  end its reads, so the request cancels the job through the Job API (``wait_or_cancel``);
- a flink-local streaming job with checkpoints: stopped with a savepoint through Flink's REST API
  (``--stop_with=savepoint``, the default; ``flink_local.FlinkRest``), cancelled if that fails.
  Either way the summary names where to resume from (``resume_from``).

Beam's wrapper of a job server it starts (Flink, Spark, Prism) takes SIGINT to stop the server
at once, which would end the job before it drains or is cancelled: ``first_signal_ours`` keeps
the first signal the CLI's, and a second one stops the server before aborting, so no job server
outlives the process.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions

from beam_rtbf.flink_local import FlinkRest, FlinkRestError
from beam_rtbf.options import FlinkCheckpointOptions
from beam_rtbf.runner_names import LOCAL_RUNNERS, PRISM
from beam_rtbf.sources.polling import release_stop, stop_reads_on

if TYPE_CHECKING:
    import apache_beam as beam
    from apache_beam.runners.runner import PipelineResult

    from beam_rtbf.local_runner import StopRequest

__all__ = ["RunStopping", "wait_or_cancel", "first_signal_ours", "latest_checkpoint", "savepoint_target"]

_LOGGER = logging.getLogger(__name__)
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_CANCEL_WAIT_S = 120.0  # how long a cancelled job may take to reach CANCELLED


class RunStopping:
    """What a stop request does for one run: decided from the runner, before the graph runs."""

    def __init__(
        self,
        stop: StopRequest | None,
        streaming: bool,
        runner: str,
        options: PipelineOptions,
        rest: FlinkRest | None = None,
    ) -> None:
        """``rest``: the flink-local job's REST API, which can stop it with a savepoint."""
        self.stop = stop
        self.options = options
        checkpoints = options.view_as(FlinkCheckpointOptions)
        self.savepoint_rest = (
            rest if checkpoints.checkpointing_interval and checkpoints.stop_with == "savepoint" else None
        )
        self.savepoint: str | None = None  # where the job was stopped with a savepoint
        environment = options.view_as(PortableOptions).environment_type
        self.drains_prism = stop is not None and streaming and runner == PRISM and environment in (None, "", "LOOPBACK")
        self.cancels = stop is not None and streaming and runner not in LOCAL_RUNNERS
        if self.cancels:
            stop.armed = True
            stop.action = "stopping the job with a savepoint" if self.savepoint_rest else "cancelling the job"
        if self.drains_prism:
            stop.armed = True

    @contextlib.contextmanager
    def around(self, pipeline: beam.Pipeline) -> Iterator[Callable[[], PipelineResult]]:
        """Yields the function that runs ``pipeline``; signal handlers and stop tokens are set
        around it and restored or released when the block ends."""
        token = stop_reads_on(pipeline, self.stop) if self.drains_prism else None
        ours = signal_handlers() if (self.drains_prism or self.cancels) else None
        restore: dict[int, Any] = {}

        def run() -> PipelineResult:
            result = pipeline.run()
            if ours is not None:
                restore.update(first_signal_ours(self.stop, ours))
            return result

        try:
            yield run
        finally:
            if token is not None:
                release_stop(token)
            for signum, handler in restore.items():
                signal.signal(signum, handler)

    def wait(self, result: PipelineResult) -> bool:
        """Wait for the job to end; True if the stop request stopped it (savepoint or cancel)."""
        if self.cancels:
            return wait_or_cancel(result, self.stop, self._stop_with_savepoint if self.savepoint_rest else None)
        result.wait_until_finish()
        return False

    def _stop_with_savepoint(self) -> bool:
        """Stop the job with a savepoint (True), or say why not (False: the caller cancels)."""
        try:
            self.savepoint = self.savepoint_rest.stop_with_savepoint(savepoint_target(self.options))
        except FlinkRestError as exc:
            _LOGGER.warning("beam-rtbf: no savepoint (%s); cancelling the job instead", exc)
            return False
        _LOGGER.warning("beam-rtbf: stopped with a savepoint at %s", self.savepoint)
        return True

    def stopped_fields(self, result: PipelineResult) -> dict[str, Any]:
        """What a stopped job's summary says instead of the conservation check, and where it resumes."""
        try:
            state = str(result.state)
        except Exception:  # noqa: BLE001 - the job service may already be gone
            state = "CANCELLED"
        checkpoints = self.options.view_as(FlinkCheckpointOptions)
        storage = checkpoints.state_backend_storage_path if checkpoints.checkpointing_interval else None
        return {
            "cancelled": self.savepoint is None,
            "stopped_with": "savepoint" if self.savepoint else "cancel",
            "state": state,
            # Records in flight when the job stopped are in its savepoint or checkpoint, not out: no check.
            "conservation_ok": None,
            "resume_from": self.savepoint or latest_checkpoint(storage),
        }


def wait_or_cancel(
    result: PipelineResult, stop: StopRequest, stop_first: Callable[[], bool] | None = None, poll_s: float = 0.2
) -> bool:
    """Wait for a job a job server runs; cancel it if ``stop`` is set first. True if it was stopped.

    A streaming job on Flink has no end of its own: the signal that ends ``beam-rtbf run`` cancels
    it through the Job API (Flink keeps its last checkpoint when asked to), so the job server
    stops with the job and not with a killed process. ``stop_first`` (a stop with a savepoint) is
    tried before that: when it returns True the job is ending by itself and is only waited for.
    """
    done = threading.Event()
    failure: list[BaseException] = []

    def waiter() -> None:
        try:
            result.wait_until_finish()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=waiter, name="wait_until_finish", daemon=True).start()
    while not done.wait(poll_s):
        if stop.requested:
            if stop_first is not None and stop_first():
                done.wait(_CANCEL_WAIT_S)
                return True
            _LOGGER.warning("beam-rtbf: cancelling the job (%s)", stop.reason)
            # The figures as of now: the result keeps them, and cancel() closes its channel.
            result.metrics()
            result.cancel()
            done.wait(_CANCEL_WAIT_S)
            return True
    if failure:
        raise failure[0]
    return False


def latest_checkpoint(storage: str | None) -> str | None:
    """The newest completed Flink checkpoint under ``storage`` (a chk-N folder with its _metadata)."""
    if not storage:
        return None
    root = storage.removeprefix("file://")
    found = [p for p in glob.glob(os.path.join(root, "*", "chk-*")) if os.path.isfile(os.path.join(p, "_metadata"))]
    return max(found, key=lambda p: os.path.getmtime(os.path.join(p, "_metadata")), default=None)


def savepoint_target(options: PipelineOptions) -> str:
    """Where a stop with a savepoint writes: --savepoint_dir, else a savepoints folder beside the checkpoints."""
    checkpoints = options.view_as(FlinkCheckpointOptions)
    if checkpoints.savepoint_dir:
        return checkpoints.savepoint_dir
    if checkpoints.state_backend_storage_path:
        return checkpoints.state_backend_storage_path.rstrip("/") + "/savepoints"
    raise FlinkRestError("no --savepoint_dir nor --state_backend_storage_path to write a savepoint to")


def signal_handlers() -> dict[int, Any] | None:
    """This process's SIGINT/SIGTERM handlers (None off the main thread: no signals there)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return {signum: signal.getsignal(signum) for signum in _SIGNALS}


def first_signal_ours(stop: StopRequest, ours: dict[int, Any]) -> dict[int, Any]:
    """Keep the first signal ``ours`` once Beam has started a job server; returns the handlers to restore.

    Beam's job server wrapper installs its own SIGINT handler when it starts a server: it stops
    the server at once (then calls the handler it replaced), which would end the job before it
    drains or is cancelled. Here the first SIGINT/SIGTERM goes to ``ours`` (the CLI's: ``stop``
    is set); a signal after that stops the server first (Beam's handler's), then goes to
    ``ours``, which aborts: no job server outlives the abort.
    """
    installed = {signum: signal.getsignal(signum) for signum in _SIGNALS}
    server = getattr(installed[signal.SIGINT], "__self__", None)  # Beam's StopOnExitJobServer, if it is its

    def handle(signum: int, frame) -> None:
        if stop.requested and server is not None and hasattr(server, "stop"):
            server.stop()
        handler = ours[signum]
        if callable(handler):
            handler(signum, frame)
        else:
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            signal.raise_signal(signum)

    for signum in _SIGNALS:
        signal.signal(signum, handle)
    return installed
