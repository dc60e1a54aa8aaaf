"""The same bounded job on every engine, and streaming effectiveness latency on Flink local.

    python bench/engines.py [--quick] [--engines direct,flink-local,spark-local,prism]

Bounded: generated JSON-lines files through the whole graph with `beam-rtbf run --runner R`,
each run in a network namespace of its own (the job servers bind every interface). Start-up is
measured apart: the same command on a 100-session input (JVM, job server, Flink/Spark, SDK
workers), and the rate is the big input's sessions over (wall - start-up). The direct runner is
the baseline of the same run. Streaming: synthetic sessions and requests on Flink local (state
strategy); the effectiveness latency of each request is its manifest's effective_at minus its
requested_at (when the filter began dropping the subject). Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import effectiveness_latencies_ms, emit, quantile
from beam_rtbf.generate import generate_files
from beam_rtbf.sources.synthetic import SyntheticConfig
from tests.helpers.netns import netns_prefix

BENCH = "engines"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(runner: str, args: list[str], timeout: float = 1800) -> tuple[float, dict]:
    """Wall seconds of `beam-rtbf run --runner RUNNER ARGS` in its own namespace, and its summary."""
    out = next(a.split("=", 1)[1] for a in args if a.startswith("--output="))
    started = time.perf_counter()
    done = subprocess.run(
        [*netns_prefix(), sys.executable, "-m", "beam_rtbf.cli", "run", f"--runner={runner}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{runner}: exit {done.returncode}: {done.stderr[-2000:]}")
    with open(os.path.join(out, "summary.json")) as f:
        return wall, json.load(f)


def bounded(engines: list[str], sessions: int, work: str) -> None:
    sizes = {"startup": 100, "job": sessions}
    inputs = {}
    for name, count in sizes.items():
        cfg = SyntheticConfig(users=max(10, count // 20), sessions=count, requests=max(1, count // 2000), seed=1,
                              bad_rate=0.0)  # fmt: skip
        data = generate_files(cfg, os.path.join(work, name), "jsonl", files=4)
        inputs[name] = [f"--sessions=file://{os.path.join(work, name, 'sessions-*.jsonl')}",
                        f"--requests=file://{data.requests_file}"]  # fmt: skip
    walls_of: dict[str, float] = {}
    for engine in engines:
        walls = {}
        for name in sizes:
            out = os.path.join(work, f"{engine}-{name}")
            walls[name], summary = run_cli(engine, [f"--output={out}", f"--registry=embedded://{out}.sqlite",
                                                    *inputs[name]])  # fmt: skip
            assert summary["conservation_ok"], summary
        params = {"sessions": sessions, "runner": summary["runner"], "strategy": summary["filter_strategy"],
                  "baseline": "direct"}  # fmt: skip
        emit(BENCH, "startup_s", walls["startup"], "s", **params, note="the 100-session run's wall time")
        emit(BENCH, "bounded_wall_s", walls["job"], "s", **params)
        work_s = walls["job"] - walls["startup"]
        if work_s > 1.0:  # else start-up is all there is to see at this size
            emit(BENCH, "bounded_sessions_per_s", sessions / work_s, "sessions/s", **params,
                 note="sessions / (job wall - start-up wall)")  # fmt: skip
        if engine != "direct" and "direct" in walls_of:
            emit(BENCH, "bounded_wall_vs_direct", walls["job"] / walls_of["direct"], "x", **params)
        walls_of[engine] = walls["job"]


def streaming_latency(seconds: int, work: str) -> None:
    out = os.path.join(work, "flink-stream")
    _, summary = run_cli("flink-local", [
        "--streaming", "--filter_strategy=state", f"--output={out}", f"--registry=embedded://{out}.sqlite",
        "--window_s=1", f"--sessions=synthetic://sessions?users=5000&rate=5000&duration_s={seconds}&seed=3",
        f"--requests=synthetic://requests?users=5000&request_rate=5&duration_s={seconds}&active_users=500&seed=3",
    ])  # fmt: skip
    latencies = effectiveness_latencies_ms(os.path.join(out, "manifests"))
    params = {"runner": "FlinkRunner", "strategy": "state", "requests": len(latencies), "stream_s": seconds}
    for q in (0.5, 0.99):
        emit(
            BENCH, f"effectiveness_latency_p{int(q * 100)}_ms", quantile(latencies, q), "ms", **params, target_p99=2_000
        )
    emit(BENCH, "streaming_sessions_per_s", summary["sessions_per_s"], "sessions/s", **params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a few minutes")
    parser.add_argument("--engines", default="direct,flink-local,spark-local")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="rtbf-bench-engines-")
    try:
        bounded(args.engines.split(","), 300_000 if args.quick else 2_000_000, work)
        streaming_latency(15 if args.quick else 60, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
