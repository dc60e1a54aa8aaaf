"""Parse stage alone: generated JSON-lines / CSV chunks -> Arrow sessions, sessions/s on one core.

    python bench/parse.py [--quick]

Chunks are read from generated files into memory first (the file source's chunk
size), so the figure is the parser's: the vectorised reader plus the pre-screens
that keep hostile lines away from it. A second figure per format has one hostile
line (deep nesting, a bare ``null``) every 10,000 lines. Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

from _common import emit
from beam_rtbf.generate import generate_files
from beam_rtbf.parse.session_batch import parse_session_chunk
from beam_rtbf.records import RawBatch
from beam_rtbf.sources.files import read_range
from beam_rtbf.sources.synthetic import SyntheticConfig

BENCH = "parse"


def _sessions_per_s(chunks: list[RawBatch], reps: int) -> tuple[float, int]:
    best = float("inf")
    rows = 0
    for _ in range(reps):
        started = time.perf_counter()
        rows = sum(parse_session_chunk(chunk).records_in for chunk in chunks)
        best = min(best, time.perf_counter() - started)
    return rows / best, rows


def _with_hostile_lines(chunk: RawBatch, every: int) -> RawBatch:
    lines = chunk.data.split(b"\n")
    hostile = [b"null", b"[" * 20_000 + b"]" * 20_000, b'{"user_id":"x","a":' + b"[" * 6_000 + b"]" * 6_000 + b"}"]
    for n, i in enumerate(range(every // 2, len(lines) - 1, every)):
        lines[i] = hostile[n % len(hostile)]
    return RawBatch(
        chunk.source, chunk.fmt, b"\n".join(lines), chunk.first_offset, None, chunk.arrival_ms, chunk.has_header
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200K sessions instead of 1M")
    args = parser.parse_args()
    sessions = 200_000 if args.quick else 1_000_000
    reps = 2 if args.quick else 3
    work = tempfile.mkdtemp(prefix="rtbf-bench-parse-")
    try:
        for fmt in ("jsonl", "csv"):
            cfg = SyntheticConfig(users=100_000, sessions=sessions, requests=0, seed=1)
            result = generate_files(cfg, f"{work}/{fmt}", fmt=fmt)
            chunks = list(read_range(result.session_files[0], fmt, 0, -1))
            rate, rows = _sessions_per_s(chunks, reps)
            emit(BENCH, f"{fmt}_sessions_per_s", rate, "sessions/s", sessions=rows, chunks=len(chunks))
            hostile = [_with_hostile_lines(chunk, 10_000) for chunk in chunks]
            rate, rows = _sessions_per_s(hostile, reps)
            emit(BENCH, f"{fmt}_hostile_1_in_10k_sessions_per_s", rate, "sessions/s", sessions=rows, chunks=len(chunks))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
