"""Every bench line is one JSON object in the DESIGN.md format and carries the bench's peak RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench")


def test_emit_prints_the_format_with_the_peak_rss_of_the_bench_and_its_children():
    code = (
        "import subprocess, sys\n"
        "from _common import emit\n"
        # a child that holds ~200 MB, finished before the line is printed: its peak counts
        "subprocess.run([sys.executable, '-c', 'b = bytearray(200 << 20); b[::4096] = b\"x\" * len(b[::4096])'],"
        " check=True)\n"
        "emit('demo', 'rate', 1234.56789, 'sessions/s', sessions=10)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=BENCH_DIR, capture_output=True, text=True, timeout=60, check=True
    )
    (line,) = done.stdout.splitlines()
    row = json.loads(line)
    assert {k: row[k] for k in ("bench", "metric", "value", "unit")} == {
        "bench": "demo",
        "metric": "rate",
        "value": 1234.568,
        "unit": "sessions/s",
    }
    params = row["params"]
    assert params["sessions"] == 10 and params["cpus"] == os.cpu_count()
    assert 200 <= params["bench_peak_rss_mb"] < 2_000
