"""Effectiveness latency on Flink (flink-local), split by stage, for two code versions in one run.

    python bench/flink_latency.py [--before REV] [--rounds 2] [--stream_s 60] [--rate 5000]

The streaming job of ``bench/engines.py`` (synthetic sessions at ``--rate``/s and 5 requests/s,
``state`` filter, 1 s windows), run ``--rounds`` times for each version, alternated: ``before``
is the code at ``--before`` (a git worktree of that commit), ``after`` this tree. Per run and per
segment of each request's manifest, p50 / p99 / max:

- ``read``: requested_at -> accepted_at (the read's poll -> the registry commit, which is made
  per bundle by RecordRequests, fused with the read);
- ``filter``: accepted_at -> effective_at (-> every state shard applied it);
- ``total``: requested_at -> effective_at (what bench/engines.py reports; target p99 <= 2 s).

Each run is in a network namespace of its own (the job server binds every interface). Prints one
JSON object per line.
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

from _common import emit, quantile
from beam_rtbf.records import parse_time_ms
from tests.helpers.netns import netns_prefix

BENCH = "flink_latency"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_run(code: str, out: str, stream_s: int, rate: int, extra: list[str]) -> tuple[dict[str, list[int]], dict]:
    argv = [
        sys.executable, "-m", "beam_rtbf.cli", "run", "--runner=flink-local", "--streaming",
        "--filter_strategy=state", f"--output={out}", f"--registry=embedded://{out}.sqlite", "--window_s=1",
        f"--sessions=synthetic://sessions?users=5000&rate={rate}&duration_s={stream_s}&seed=3",
        f"--requests=synthetic://requests?users=5000&request_rate=5&duration_s={stream_s}&active_users=500&seed=3",
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": code}
    done = subprocess.run([*netns_prefix(), *argv], cwd=code, env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {done.stderr[-2000:]}")
    segments: dict[str, list[int]] = {"read": [], "filter": [], "total": []}
    for name in os.listdir(os.path.join(out, "manifests")):
        with open(os.path.join(out, "manifests", name)) as f:
            m = json.load(f)
        requested, accepted, effective = (parse_time_ms(m[k]) for k in ("requested_at", "accepted_at", "effective_at"))
        segments["read"].append(accepted - requested)
        segments["filter"].append(effective - accepted)
        segments["total"].append(effective - requested)
    with open(os.path.join(out, "summary.json")) as f:
        return {k: sorted(v) for k, v in segments.items()}, json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=None, help="the commit to compare with (default: none, this tree only)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stream_s", type=int, default=60)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--extra", default="", help="more `beam-rtbf run` flags for every run, space-separated")
    parser.add_argument("--after_extra", default="", help="more flags for the `after` runs only")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="rtbf-bench-latency-")
    versions = {"after": ROOT}
    try:
        if args.before:
            tree = os.path.join(work, "before-src")
            subprocess.run(["git", "worktree", "add", "--detach", tree, args.before], cwd=ROOT, check=True,
                           capture_output=True)  # fmt: skip
            versions = {"before": tree, "after": ROOT}
        commit = {
            label: subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=code, capture_output=True, text=True
            ).stdout.strip()
            for label, code in versions.items()
        }
        for round_ in range(args.rounds):
            for label, code in versions.items():
                out = os.path.join(work, f"{label}-{round_}")
                extra = args.extra.split() + (args.after_extra.split() if label == "after" else [])
                started = time.monotonic()
                segments, summary = one_run(code, out, args.stream_s, args.rate, extra)
                params = {"version": label, "commit": commit[label], "round": round_, "stream_s": args.stream_s,
                          "sessions_per_s_offered": args.rate, "requests": len(segments["total"]),
                          "extra": " ".join(extra), "wall_s": round(time.monotonic() - started, 1)}  # fmt: skip
                for segment, values in segments.items():
                    for q in (0.5, 0.99, 1.0):
                        name = "max" if q == 1.0 else f"p{int(q * 100)}"
                        emit(BENCH, f"{segment}_{name}_ms", quantile(values, q), "ms", **params, target_p99=2_000)
                emit(BENCH, "sessions_per_s", summary.get("sessions_per_s") or 0, "sessions/s", **params)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if args.before:
            subprocess.run(["git", "worktree", "remove", "--force", os.path.join(work, "before-src")], cwd=ROOT,
                           capture_output=True)  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
