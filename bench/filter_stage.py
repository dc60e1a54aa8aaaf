"""Filter stage: sessions/s per core, batch latency and side-input memory of the deletion set.

    python bench/filter_stage.py [--quick]

Compares, in the same run, our vectorised filter (sorted 64-bit hashes, one
``searchsorted`` per batch) with the naive per-record Python set lookup.
Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from _common import emit
from beam_rtbf.filter.deletion_set import DeletionSet, hash_ids
from beam_rtbf.filter.suppress import split_batch
from beam_rtbf.sources.synthetic import SyntheticConfig, make_session_batch

BENCH = "filter_stage"


def _ids(n: int, prefix: str = "u") -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(np.arange(n)).cast(pa.string()), "")


def _batch(rows: int, users: int, seed: int = 1) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    cfg = SyntheticConfig(users=users)
    batch = make_session_batch(cfg, rng, np.zeros(rows, dtype=np.int64), "b-")
    # Replace user ids with u<k> so they match the deletion-set ids below.
    users_col = pc.binary_join_element_wise("u", pa.array(rng.integers(0, users, rows)).cast(pa.string()), "")
    return batch.set_column(0, "user_id", users_col)


def _best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _measure_table(table: int, batch_rows: int) -> None:
    deletion_set = DeletionSet(hash_ids(_ids(table)))
    users = 20 * table  # 5% of sessions belong to forgotten subjects
    batch = _batch(batch_rows, users)
    ours = _best_of(lambda: split_batch(batch, deletion_set), 5)
    emit(
        BENCH,
        "batch_latency_ms",
        ours * 1000,
        "ms",
        strategy="vectorised_hash_set",
        table_subjects=table,
        batch_sessions=batch_rows,
        user_space=users,
        target_ms=50,
    )
    emit(
        BENCH,
        "sessions_per_s_per_core",
        batch_rows / ours,
        "sessions/s",
        strategy="vectorised_hash_set",
        table_subjects=table,
        batch_sessions=batch_rows,
        target=2_000_000,
    )
    python_set = set(_ids(table).to_pylist())

    def per_record() -> pa.RecordBatch:
        # The per-record way: a Python object per session, a set lookup each, rebuild the batch.
        keep = [user not in python_set for user in batch.column("user_id").to_pylist()]
        return batch.filter(pa.array(keep))

    naive = _best_of(per_record, 3)
    emit(
        BENCH,
        "sessions_per_s_per_core",
        batch_rows / naive,
        "sessions/s",
        strategy="baseline_python_set_per_record",
        table_subjects=table,
        batch_sessions=batch_rows,
    )
    emit(BENCH, "speedup_vs_per_record", naive / ours, "x", table_subjects=table, batch_sessions=batch_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    args = parser.parse_args()
    table_sizes = [50_000, 1_000_000] if not args.quick else [50_000, 200_000]
    memory_sizes = [1_000_000, 10_000_000] if not args.quick else [1_000_000]
    batch_rows = 100_000

    for table in table_sizes:
        _measure_table(table, batch_rows)
        gc.collect()

    for size in memory_sizes:
        deletion_set = DeletionSet(hash_ids(_ids(size)))
        emit(BENCH, "side_input_bytes", deletion_set.nbytes / 1e6, "MB", table_subjects=size, target_mb=150)
        del deletion_set
        gc.collect()


if __name__ == "__main__":
    main()
