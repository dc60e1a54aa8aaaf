"""Run a ``run`` or ``purge`` job from its final PipelineOptions: the one place that executes jobs.

The CLI (``cli.py``) turns flags, a config file and a runner profile into PipelineOptions
(``jobspec.py``) and hands them here; this module picks the job kind, runs it through the steps
every job shares (``job.run_job``), prints its summary and returns the exit code. Nothing here
parses command lines. The top layer below the CLI: it imports both job kinds, nothing imports it
but the CLI.

    exit codes  run:   0 conservation holds (or a job jar / detached job), 1 it does not
                purge: 0 all verified, 1 something left open or a bad manifest, 3 blast-radius guard
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from apache_beam.options.pipeline_options import PipelineOptions

from beam_rtbf.job import Job, job_options, run_job
from beam_rtbf.options import RtbfOptions
from beam_rtbf.pipeline import RunJob
from beam_rtbf.purge.pipeline import PurgeJob
from beam_rtbf.sinks.files import output_mode
from beam_rtbf.summary import print_purge_summary, print_run_summary, purge_exit_code, run_exit_code

if TYPE_CHECKING:
    from beam_rtbf.local_runner import StopRequest

__all__ = ["execute", "Command", "CommandKind", "COMMANDS"]

Command = Literal["run", "purge"]


class CommandKind(NamedTuple):
    """What differs per command around ``run_job``: the job, how its summary prints, its exit code."""

    job: Callable[[PipelineOptions], Job]
    print_summary: Callable[[dict[str, Any]], None]
    exit_code: Callable[[dict[str, Any]], int]


COMMANDS: dict[str, CommandKind] = {
    "run": CommandKind(RunJob, print_run_summary, run_exit_code),
    "purge": CommandKind(PurgeJob, print_purge_summary, purge_exit_code),
}


def execute(command: Command, options: PipelineOptions, stop: StopRequest | None = None) -> int:
    """Run ``command`` with its final options; print its summary; return the process exit code.

    User errors (bad option combinations, an unreachable registry, a live run in the output)
    raise ``ValueError`` (``job.OutputInUse`` for the live run) / ``RegistryUnavailable`` with a
    one-line message for the CLI to print. Files are written with the permissions of ``--output_mode``.
    """
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}")
    kind = COMMANDS[command]
    with output_mode(options.view_as(RtbfOptions).output_mode):
        summary = run_job(kind.job(job_options(options)), stop)
    kind.print_summary(summary)
    return kind.exit_code(summary)
