"""Helpers shared by the benchmarks: JSON-lines output in the DESIGN.md format."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def emit(bench: str, metric: str, value: float, unit: str, **params) -> None:
    print(
        json.dumps(
            {
                "bench": bench,
                "metric": metric,
                "value": round(value, 3),
                "unit": unit,
                "params": {**params, "cpus": os.cpu_count(), "python": platform.python_version()},
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
