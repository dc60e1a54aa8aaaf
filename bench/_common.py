"""Helpers shared by the benchmarks: JSON-lines output in the DESIGN.md format."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def peak_rss_mb() -> float:
    """The largest resident set so far of this process and of its finished children (the jobs a
    bench ran in-process or as children; a child still running is sampled by its bench)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)  # Linux: KiB


def emit(bench: str, metric: str, value: float, unit: str, **params) -> None:
    """One result line; every line carries the bench's peak RSS so far (``bench_peak_rss_mb``)."""
    print(
        json.dumps(
            {
                "bench": bench,
                "metric": metric,
                "value": round(value, 3),
                "unit": unit,
                "params": {
                    **params,
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "bench_peak_rss_mb": peak_rss_mb(),
                },
            }
        ),
        flush=True,
    )


@contextmanager
def timer():
    box = {}
    started = time.perf_counter()
    yield box
    box["s"] = time.perf_counter() - started


def effectiveness_latencies_ms(manifests_dir: str) -> list[int]:
    """Each request's effectiveness latency from its manifest (effective_at - requested_at), sorted."""
    from beam_rtbf.records import parse_time_ms

    latencies = []
    for name in sorted(os.listdir(manifests_dir)) if os.path.isdir(manifests_dir) else []:
        with open(os.path.join(manifests_dir, name)) as handle:
            manifest = json.load(handle)
        latencies.append(parse_time_ms(manifest["effective_at"]) - parse_time_ms(manifest["requested_at"]))
    return sorted(latencies)


def quantile(sorted_values: list[float], q: float) -> float:
    """The q-quantile of already sorted values (nearest rank)."""
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
