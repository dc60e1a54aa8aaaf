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
