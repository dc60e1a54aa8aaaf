"""Checkpoint size of the streaming broadcast strategy on Flink (flink-local) over a long run.

    python bench/flink_checkpoints.py [--quick] [--minutes 10] [--ticks sessions,periodic_impulse]

For each way of timing the deletion set's refresh (``--refresh_ticks``: a timer while the sessions
run, or Beam's PeriodicImpulse), one streaming run of synthetic sessions (500/s) and requests
with checkpoints every 5 s; every 30 s the newest completed checkpoint's size as Flink reports it
(REST API: the whole job and the refresh-ticks vertex) and the checkpoint folder's size on disk.
The known concern: PeriodicImpulse is a splittable DoFn whose restriction and watermark state
travel in every checkpoint. Each run happens in a network namespace of its own (the job server
binds every interface); the bench re-runs itself inside one. Prints one JSON object per line.
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


def _ticks_vertex_bytes(rest: FlinkRest, job: str, checkpoint_id: int) -> int | None:
    """The refresh-ticks vertex's share of a checkpoint (the vertex whose name says RefreshTicks)."""
    vertices = {v["id"]: v["name"] for v in _get(rest, f"/jobs/{job}").get("vertices", [])}
    tasks = _get(rest, f"/jobs/{job}/checkpoints/details/{checkpoint_id}").get("tasks", {})
    sizes = [t.get("state_size", 0) for vid, t in tasks.items() if "RefreshTicks" in vertices.get(vid, "")]
    return sum(sizes) if sizes else None


def one_run(ticks: str, minutes: float, work: str) -> None:
    """Inside a network namespace: run, sample every SAMPLE_S, stop with a savepoint."""
    port = free_port()
    conf = os.path.join(work, "conf")
    os.makedirs(conf, exist_ok=True)
    with open(os.path.join(conf, "config.yaml"), "w") as handle:
        handle.write(f"rest.port: {port}\n")
    duration = int(minutes * 60) + 120
    argv = [
        sys.executable, "-m", "beam_rtbf.cli", "run", "--runner=flink-local", "--streaming",
        "--filter_strategy=broadcast", f"--refresh_ticks={ticks}", f"--output={work}/out",
        f"--registry=embedded://{work}/r.sqlite", f"--flink_conf_dir={conf}",
        f"--sessions=synthetic://sessions?users=5000&rate=500&duration_s={duration}&seed=3",
        f"--requests=synthetic://requests?users=5000&request_rate=0.2&duration_s={duration}&active_users=500&seed=3",
        "--checkpointing_interval=5000", "--state_backend=filesystem",
        f"--state_backend_storage_path=file://{work}/checkpoints", "--retain_externalized_checkpoints_on_cancellation",
    ]  # fmt: skip
    params = {"ticks": ticks, "minutes": minutes, "rate_per_s": 500, "checkpoint_interval_ms": 5000}
    with open(os.path.join(work, "run.log"), "w") as log:
        job = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    rest = FlinkRest(f"http://127.0.0.1:{port}")
    try:
        job_id, started = None, time.monotonic()
        while job_id is None:
            try:
                job_id = rest.running_job()
            except FlinkRestError:
                if job.poll() is not None or time.monotonic() - started > 300:
                    raise RuntimeError(f"{ticks}: the job did not start (see {work}/run.log)") from None
                time.sleep(1)
        began = time.monotonic()
        while time.monotonic() - began < minutes * 60:
            time.sleep(SAMPLE_S)
            latest = (rest.checkpoint_stats(job_id).get("latest") or {}).get("completed")
            if not latest:
                continue
            minute = round((time.monotonic() - began) / 60, 2)
            sample = {**params, "minute": minute, "checkpoint_id": latest["id"]}
            emit(BENCH, "checkpoint_state_bytes", latest["state_size"], "bytes", **sample)
            vertex = _ticks_vertex_bytes(rest, job_id, latest["id"])
            if vertex is not None:
                emit(BENCH, "refresh_ticks_state_bytes", vertex, "bytes", **sample)
            emit(BENCH, "checkpoint_dir_bytes", _du(os.path.join(work, "checkpoints")), "bytes", **sample)
            emit(BENCH, "checkpoint_duration_ms", latest.get("end_to_end_duration", 0), "ms", **sample)
        job.send_signal(signal.SIGINT)  # a savepoint, then the job ends
        job.wait(timeout=300)
        with open(os.path.join(work, "out", "summary.json")) as handle:
            resume_from = json.load(handle).get("resume_from")
        if resume_from:
            emit(BENCH, "savepoint_bytes", _du(resume_from), "bytes", **params)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)  # the process group this bench started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 minutes per run instead of --minutes")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--ticks", default="sessions,periodic_impulse")
    parser.add_argument("--inside", default=None, help=argparse.SUPPRESS)  # WORK: already in the namespace
    args = parser.parse_args()
    minutes = 2.0 if args.quick else args.minutes
    if args.inside:
        one_run(args.ticks, minutes, args.inside)
        return
    for ticks in args.ticks.split(","):
        work = tempfile.mkdtemp(prefix=f"rtbf-bench-ckpt-{ticks}-")
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            f"--minutes={minutes}",
            f"--ticks={ticks}",
            f"--inside={work}",
        ]
        try:
            subprocess.run([*netns_prefix(), *cmd], cwd=ROOT, check=True, timeout=minutes * 60 + 900)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
