"""Run a ``run`` or ``purge`` job from its final PipelineOptions: the one place that executes jobs.

The CLI (``cli.py``) turns flags, a config file and a runner profile into PipelineOptions
(``jobspec.py``) and hands them here; this module runs the job, prints its summary and
returns the exit code. Nothing here parses command lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from apache_beam.options.pipeline_options import PipelineOptions

if TYPE_CHECKING:
    from beam_rtbf.local_runner import StopRequest

__all__ = ["execute", "Command"]

Command = Literal["run", "purge"]


def _print_run_summary(summary: dict[str, Any]) -> None:
    keys = [
        "sessions_in",
        "clean",
        "suppressed",
        "dead_lettered",
        "requests_accepted",
        "manifests_written",
        "elapsed_s",
        "sessions_per_s",
        "runner",
        "filter_strategy",
    ]
    width = max(len(k) for k in keys)
    print("beam-rtbf run summary")
    for key in keys:
        print(f"  {key:<{width}}  {summary.get(key)}")
    print(
        f"  conservation (in = clean + suppressed + dead-lettered): "
        f"{'holds' if summary.get('conservation_ok') else 'VIOLATED'}"
    )
    print(f"  outputs in {summary.get('output')} (summary.json has every figure)")


def _execute_run(options: PipelineOptions, stop: StopRequest | None) -> int:
    from beam_rtbf.pipeline import run

    summary = run(options, stop=stop)
    if "job_jar" in summary:
        print(f"beam-rtbf run: job jar written to {summary['job_jar']} (not run); submit it, e.g. with spark-submit")
        return 0
    if summary.get("detached"):
        print(
            f"beam-rtbf run: job {summary['job_id']} submitted to {summary['runner']} ({summary['state']}); "
            "not waiting (--detach)"
        )
        return 0
    if summary.get("already_committed"):
        print(f"beam-rtbf run: {summary['message']}")
    _print_run_summary(summary)
    if summary.get("stopped_by"):
        print(f"  stopped by {summary['stopped_by']}: the reads ended, everything read was written")
    return 0 if summary.get("conservation_ok") else 1


def _execute_purge(options: PipelineOptions) -> int:
    from beam_rtbf.purge.pipeline import purge_exit_code, run_purge

    summary = run_purge(options)
    if "job_jar" in summary:
        print(
            f"beam-rtbf purge: job jar written to {summary['job_jar']} for {summary['requests_pending']} requests, "
            f"{summary['files_planned']} files (not run); submit it, e.g. with spark-submit"
        )
        return 0
    guard = summary.get("guard") or {}
    print("beam-rtbf purge summary")
    for key in (
        "run",
        "requests_pending",
        "manifests_already_done",
        "verified",
        "archive_records_removed",
        "elapsed_s",
    ):
        print(f"  {key:<24}  {summary.get(key)}")
    checked = summary.get("verification")
    if checked:
        files = sum(v for k, v in checked["scanned"].items() if k.endswith("_files"))
        print(
            f"  {'verification_scan':<24}  {files} files, {checked['scanned']['rows']} rows, "
            f"{checked['found']} subject records found, {len(checked['unreadable'])} unreadable, "
            f"{checked['elapsed_s']} s"
        )
        for path in checked["unreadable"]:
            print(f"  unreadable: {path}")
    for problem in summary["manifest_problems"]:
        print(f"  bad manifest {problem['path']}: {problem['reason']}")
    if summary.get("blocked"):
        print("  STOPPED by the blast-radius guard (nothing was deleted); re-run with --confirm if intended:")
        for reason in guard.get("reasons", []):
            print(f"    {reason}")
    for request_id in summary.get("incomplete", []):
        print(f"  incomplete: {request_id} (see beam-rtbf status {request_id})")
    return purge_exit_code(summary)


def execute(command: Command, options: PipelineOptions, stop: StopRequest | None = None) -> int:
    """Run ``command`` with its final options; print its summary; return the process exit code.

    User errors (bad option combinations, an unreachable registry, a live run in the output)
    raise ``ValueError`` / ``RegistryUnavailable`` with a one-line message for the CLI to print.
    Files are written with the permissions of ``--output_mode``.
    """
    from beam_rtbf.options import RtbfOptions
    from beam_rtbf.sinks.files import output_mode

    with output_mode(options.view_as(RtbfOptions).output_mode):
        if command == "run":
            return _execute_run(options, stop)
        if command == "purge":
            return _execute_purge(options)
    raise ValueError(f"unknown command {command!r}")
