"""Checkpoint size on Flink (flink-local) over a long streaming run: does state grow?

    python bench/flink_checkpoints.py [--quick] [--minutes 10] [--jobs rtbf-state,periodic-impulse] [--call_s 1]

apache/beam#27648: Python splittable DoFns that poll with ``defer_remainder`` (Beam's
PeriodicImpulse, and beam-rtbf's stream reads, ``sources/polling.py``) were reported to grow
Flink checkpoints without bound. Two jobs, checkpoints every 5 s, each run for ``--minutes``:

- ``rtbf-state``: ``beam-rtbf run`` streaming synthetic sessions (500/s, 2 shards) and requests
  with the state filter (the broadcast filter cannot be checkpointed on Beam 2.62's Flink runner:
  tests/integration/test_flink_known_issues.py);
- ``periodic-impulse``: Beam's PeriodicImpulse ticking every second into a Map, alone (what the
  broadcast filter's ``--refresh_ticks=periodic_impulse`` runs).

Every 30 s: the newest completed checkpoint's size as Flink reports it (REST API), each vertex's
share, and the checkpoint folder on disk. Each job runs in a network namespace of its
own (the job server binds every interface); the bench re-runs itself inside one. Prints one JSON
object per line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from _common import emit
from beam_rtbf.flink_local import FlinkRest, FlinkRestError
from beam_rtbf.testing.redis_server import free_port
from tests.helpers.netns import netns_prefix

BENCH = "flink_checkpoints"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_S = 30


def _du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _get(rest: FlinkRest, path: str) -> dict:
    with urllib.request.urlopen(rest.base_url + path, timeout=10) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def _vertex_sizes(rest: FlinkRest, job: str, checkpoint_id: int) -> dict[str, int]:
    """Each vertex's share of a checkpoint, by vertex name (cut to 60 characters)."""
    vertices = {v["id"]: v["name"] for v in _get(rest, f"/jobs/{job}").get("vertices", [])}
    tasks = _get(rest, f"/jobs/{job}/checkpoints/details/{checkpoint_id}").get("tasks", {})
    return {vertices.get(vid, vid)[:60]: task.get("state_size", 0) for vid, task in tasks.items()}


def _conf_dir(work: str) -> tuple[str, int]:
    """A Flink configuration directory fixing the REST port, so this process can read the statistics."""
    port = free_port()
    conf = os.path.join(work, "conf")
    os.makedirs(conf, exist_ok=True)
    with open(os.path.join(conf, "config.yaml"), "w") as handle:
        handle.write(f"rest.port: {port}\n")
    return conf, port


def _rtbf_job(work: str, conf: str, minutes: float, call_s: float) -> subprocess.Popen:
    duration = int(minutes * 60) + 120
    argv = [
        sys.executable, "-m", "beam_rtbf.cli", "run", "--runner=flink-local", "--streaming",
        "--filter_strategy=state", f"--output={work}/out", f"--registry=embedded://{work}/r.sqlite",
        f"--flink_conf_dir={conf}", f"--read_call_s={call_s}",
        f"--sessions=synthetic://sessions?users=5000&rate=500&duration_s={duration}&seed=3&shards=2",
        f"--requests=synthetic://requests?users=5000&request_rate=0.2&duration_s={duration}&active_users=500&seed=3",
        *_checkpoint_flags(work),
    ]  # fmt: skip
    with open(os.path.join(work, "run.log"), "w") as log:
        return subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _impulse_job(work: str, conf: str, minutes: float, call_s: float) -> subprocess.Popen:
    """PeriodicImpulse alone, through Beam's FlinkRunner (this file run with --impulse-job)."""
    argv = [sys.executable, os.path.abspath(__file__), f"--impulse-job={work}", f"--conf={conf}"]
    with open(os.path.join(work, "run.log"), "w") as log:
        return subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _checkpoint_flags(work: str) -> list[str]:
    return [
        "--checkpointing_interval=5000", "--state_backend=filesystem",
        f"--state_backend_storage_path=file://{work}/checkpoints", "--retain_externalized_checkpoints_on_cancellation",
    ]  # fmt: skip


def impulse_job(work: str, conf: str) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.transforms.periodicsequence import PeriodicImpulse

    import beam_rtbf.options  # noqa: F401 - declares the Flink checkpoint options
    from beam_rtbf.job_servers import job_server_jar

    options = PipelineOptions([
        "--runner=FlinkRunner", "--flink_master=[local]", f"--flink_job_server_jar={job_server_jar('flink')}",
        "--environment_type=LOOPBACK", "--streaming", "--parallelism=2", f"--flink_conf_dir={conf}",
        "--finish_bundle_before_checkpointing", *_checkpoint_flags(work),
    ])  # fmt: skip
    with beam.Pipeline(options=options) as p:
        _ = p | "RefreshTicks" >> PeriodicImpulse(fire_interval=1, apply_windowing=False) | beam.Map(lambda t: t)


def one_run(job: str, minutes: float, work: str, call_s: float) -> None:
    """Inside a network namespace: start ``job``, sample every SAMPLE_S, stop it."""
    conf, port = _conf_dir(work)
    process = (_rtbf_job if job == "rtbf-state" else _impulse_job)(work, conf, minutes, call_s)
    params = {"job": job, "minutes": minutes, "checkpoint_interval_ms": 5000}
    if job == "rtbf-state":
        params["read_call_s"] = call_s
    rest = FlinkRest(f"http://127.0.0.1:{port}")
    try:
        job_id, started = None, time.monotonic()
        while job_id is None:
            try:
                job_id = rest.running_job()
            except FlinkRestError:
                if process.poll() is not None or time.monotonic() - started > 300:
                    raise RuntimeError(f"{job}: the job did not start (see {work}/run.log)") from None
                time.sleep(1)
        began = time.monotonic()
        while time.monotonic() - began < minutes * 60:
            time.sleep(SAMPLE_S)
            if process.poll() is not None:
                raise RuntimeError(f"{job}: the job ended after {time.monotonic() - began:.0f} s (see {work}/run.log)")
            latest = (rest.checkpoint_stats(job_id).get("latest") or {}).get("completed")
            if not latest:
                continue
            sample = {**params, "minute": round((time.monotonic() - began) / 60, 2), "checkpoint_id": latest["id"]}
            emit(BENCH, "checkpoint_state_bytes", latest["state_size"], "bytes", **sample)
            for vertex, size in _vertex_sizes(rest, job_id, latest["id"]).items():
                if size:
                    emit(BENCH, "vertex_state_bytes", size, "bytes", **sample, vertex=vertex)
            emit(BENCH, "checkpoint_dir_bytes", _du(os.path.join(work, "checkpoints")), "bytes", **sample)
            emit(BENCH, "checkpoint_duration_ms", latest.get("end_to_end_duration", 0), "ms", **sample)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the process group this bench started (job and job server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 minutes per job instead of --minutes")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--jobs", default="rtbf-state,periodic-impulse")
    parser.add_argument("--call_s", type=float, default=1.0, help="rtbf-state: the reads' --read_call_s")
    parser.add_argument("--inside", default=None, help=argparse.SUPPRESS)  # WORK: already in the namespace
    parser.add_argument("--impulse-job", default=None, help=argparse.SUPPRESS)  # WORK: run the PeriodicImpulse job
    parser.add_argument("--conf", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    minutes = 2.0 if args.quick else args.minutes
    if args.impulse_job:
        impulse_job(args.impulse_job, args.conf)
        return
    if args.inside:
        one_run(args.jobs, minutes, args.inside, args.call_s)
        return
    for job in args.jobs.split(","):
        work = tempfile.mkdtemp(prefix=f"rtbf-bench-ckpt-{job}-")
        cmd = [sys.executable, os.path.abspath(__file__), f"--minutes={minutes}", f"--jobs={job}", f"--inside={work}",
               f"--call_s={args.call_s}"]  # fmt: skip
        subprocess.run([*netns_prefix(), *cmd], cwd=ROOT, check=True, timeout=minutes * 60 + 900)
        shutil.rmtree(work, ignore_errors=True)  # kept when the run failed: its run.log says why


if __name__ == "__main__":
    main()
