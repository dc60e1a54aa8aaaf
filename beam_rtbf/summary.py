"""A job's figures: counters read from the runner, the run summary, its printout and exit codes.

``summary.json`` (run) and ``receipts/_runs/<run>-summary.json`` (purge) are written from these
dicts; the CLI prints them with ``print_run_summary`` / ``print_purge_summary`` and exits with
``run_exit_code`` / ``purge_exit_code``. Pure functions, no Beam graph: tests call them directly.
"""

from __future__ import annotations

import json
from typing import Any

from apache_beam.metrics.metric import MetricsFilter

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.redact import mask_secrets
from beam_rtbf.sinks.files import write_bytes_atomically

__all__ = [
    "collect_counters",
    "summarize",
    "write_summary",
    "run_exit_code",
    "purge_exit_code",
    "print_run_summary",
    "print_purge_summary",
]


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
    opts: Any,
    stopped_by: str | None = None,
) -> dict[str, Any]:
    """The figures of one ``run`` (``summary.json``); ``opts`` is its ``RtbfOptions`` (URIs are masked)."""
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
        "analytics_db_rows": c(rtbf_metrics.ANALYTICS_DB_ROWS, 0),
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
        "analytics_sink": mask_secrets(opts.analytics_sink) if opts.analytics_sink else None,
        "stopped_by": stopped_by,  # SIGTERM / SIGINT when a streaming run was stopped and drained
    }
    if rtbf_metrics.EFFECTIVENESS_MS + "_max" in counters:
        summary["effectiveness_latency_ms_max"] = counters[rtbf_metrics.EFFECTIVENESS_MS + "_max"]
    summary["conservation_ok"] = sessions_in == (
        summary["clean"] + summary["suppressed"] + summary["dead_lettered"] + summary["duplicates"]
    )
    return summary


# The figures that come from the runner's counters (``summarize``).
COUNTER_FIGURES = (
    "sessions_in", "clean", "suppressed", "dead_lettered", "duplicates", "requests_in", "requests_accepted",
    "requests_duplicate", "requests_ignored", "requests_dead_lettered", "manifests_written", "archive_files",
    "archive_records", "analytics_rows", "analytics_db_rows", "registry_errors", "sessions_held",
)  # fmt: skip


def without_unreported_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """A cancelled job's summary: counter figures the runner did not report are unknown, not 0.

    Flink's job server gives a job's metrics when it ends; a cancelled streaming job has none.
    """
    if any(summary.get(key) for key in COUNTER_FIGURES):
        return summary
    return {**summary, **dict.fromkeys(COUNTER_FIGURES), "sessions_per_s": None,
            "figures": "not reported: the runner gives a job's metrics when it ends, not when it is stopped"}  # fmt: skip


def write_summary(path: str, summary: dict[str, Any]) -> None:
    """Write ``summary`` as indented JSON, atomically (a reader never sees half a summary)."""
    write_bytes_atomically(path, json.dumps(summary, indent=2).encode())


def run_exit_code(summary: dict[str, Any]) -> int:
    """0 when every session read is accounted for (or nothing was run here: a jar, a detached job); else 1."""
    if "job_jar" in summary or summary.get("detached") or summary.get("cancelled") or summary.get("stopped_with"):
        return 0
    return 0 if summary.get("conservation_ok") else 1


def purge_exit_code(summary: dict[str, Any]) -> int:
    """0 all verified (or only a job jar written); 3 stopped by the blast-radius guard; 1 anything left
    open or a bad manifest."""
    if "job_jar" in summary:
        return 0
    if summary.get("blocked"):
        return 3
    if summary.get("incomplete") or summary.get("manifest_problems"):
        return 1
    return 0


_RUN_KEYS = (
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
)

_PURGE_KEYS = (
    "run",
    "runner",
    "requests_pending",
    "manifests_already_done",
    "verified",
    "archive_records_removed",
    "elapsed_s",
)


def print_run_summary(summary: dict[str, Any]) -> None:
    """What ``beam-rtbf run`` prints: a jar or detached job in one line, else the main figures."""
    if "job_jar" in summary:
        print(f"beam-rtbf run: job jar written to {summary['job_jar']} (not run); submit it, e.g. with spark-submit")
        return
    if summary.get("detached"):
        print(
            f"beam-rtbf run: job {summary['job_id']} submitted to {summary['runner']} ({summary['state']}); "
            "not waiting (--detach)"
        )
        return
    if summary.get("already_committed"):
        print(f"beam-rtbf run: {summary['message']}")
    width = max(len(k) for k in _RUN_KEYS)
    print("beam-rtbf run summary")
    for key in _RUN_KEYS:
        print(f"  {key:<{width}}  {summary.get(key)}")
    if summary.get("stopped_with"):
        how = "stopped with a savepoint" if summary["stopped_with"] == "savepoint" else "cancelled"
        print(f"  {how} by {summary.get('stopped_by')}: records in flight are neither in nor out (not checked)")
        if summary.get("resume_from"):
            print(f"  resume with --savepoint_path={summary['resume_from']}")
    else:
        print(
            f"  conservation (in = clean + suppressed + dead-lettered): "
            f"{'holds' if summary.get('conservation_ok') else 'VIOLATED'}"
        )
    print(f"  outputs in {summary.get('output')} (summary.json has every figure)")
    if summary.get("stopped_by") and not summary.get("stopped_with"):
        print(f"  stopped by {summary['stopped_by']}: the reads ended, everything read was written")


def print_purge_summary(summary: dict[str, Any]) -> None:
    """What ``beam-rtbf purge`` prints: a jar in one line, else the figures, problems and guard reasons."""
    if "job_jar" in summary:
        print(
            f"beam-rtbf purge: job jar written to {summary['job_jar']} for {summary['requests_pending']} requests, "
            f"{summary['files_planned']} files (not run); submit it, e.g. with spark-submit"
        )
        return
    guard = summary.get("guard") or {}
    print("beam-rtbf purge summary")
    for key in _PURGE_KEYS:
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
