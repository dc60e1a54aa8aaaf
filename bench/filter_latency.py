"""Filter latency per micro-batch against a real Redis, the first seed's figure reproduced.

    pip install -e '.[bench]'   # redis, matplotlib
    python bench/filter_latency.py [--quick] [--plot bench/results/filter_latency.png]

Starts its own redis-server on a free loopback port (stopped by its PID at the
end), loads deletion tables from 2.5 K to 1 M subjects, and times one
micro-batch of 10 K and of 100 K sessions for:

- seed_local:  the seed's "local filter": fetch the whole deletion table from
  Redis (SCAN) every micro-batch, then test each record in Python;
- seed_remote: the seed's "remote filter": one Redis GET per record;
- broadcast / state: our in-memory deletion set (kept current by one delta
  query per refresh; the per-batch cost is that query plus the vectorised filter);
- lookup: one SMISMEMBER for the batch's distinct ids;
- bloom: Bloom filter in memory, SMISMEMBER only for its candidates.

Prints one JSON object per line, with each strategy's ratio to both seed
baselines at the same table and batch size, and saves a PNG like the seed's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from _common import emit
from beam_rtbf.filter.bloom import BloomFilter
from beam_rtbf.filter.deletion_set import hash_ids
from beam_rtbf.filter.follower import RegistryFollower
from beam_rtbf.filter.lookup import RegistryConfirmer, distinct_ids
from beam_rtbf.filter.suppress import split_batch
from beam_rtbf.records import ErasureRequest
from beam_rtbf.registry import open_registry
from beam_rtbf.sources.synthetic import SyntheticConfig, make_session_batch
from beam_rtbf.testing.redis_server import RedisServer

BENCH = "filter_latency"
SEED_KEY = "seed:del:"


def _subjects(lo: int, hi: int) -> list[str]:
    return [f"s{i}" for i in range(lo, hi)]


def _batch(rows: int, universe: int, rng: np.random.Generator) -> pa.RecordBatch:
    batch = make_session_batch(SyntheticConfig(users=16), rng, np.zeros(rows, dtype=np.int64), "b-")
    users = pc.binary_join_element_wise("s", pa.array(rng.integers(0, universe, rows)).cast(pa.string()), "")
    return batch.set_column(0, "user_id", users)


def _grow_table(server: RedisServer, registry, have: int, want: int) -> None:
    """Add subjects [have, want) to the registry and, for the seed's GET filter, as keys."""
    import redis

    client = redis.Redis.from_url(server.url)
    for lo in range(have, want, 10_000):
        ids = _subjects(lo, min(want, lo + 10_000))
        registry.add([ErasureRequest(f"r-{s}", s, 1) for s in ids])
        client.mset({SEED_KEY + s: 1 for s in ids})
    client.close()


def seed_local(client, batch: pa.RecordBatch) -> pa.RecordBatch:
    """The seed's local filter: the whole table from Redis every micro-batch, then per record."""
    table = {key[len(SEED_KEY) :] for key in client.scan_iter(match=SEED_KEY + "*", count=10_000)}
    keep = [user not in table for user in batch.column("user_id").to_pylist()]
    return batch.filter(pa.array(keep))


def seed_remote(client, batch: pa.RecordBatch) -> pa.RecordBatch:
    """The seed's remote filter: one GET per record."""
    keep = [client.get(SEED_KEY + user) is None for user in batch.column("user_id").to_pylist()]
    return batch.filter(pa.array(keep))


def _time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    import redis

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    parser.add_argument("--plot", default=os.path.join(os.path.dirname(__file__), "results", "filter_latency.png"))
    args = parser.parse_args()
    tables = (
        [2_500, 10_000, 50_000]
        if args.quick
        else [2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000]
    )
    batches = [10_000] if args.quick else [10_000, 100_000]
    remote_rows = 2_000 if args.quick else None  # GET per record is flat in table size: sample it in quick mode
    rng = np.random.default_rng(5)
    results: dict[tuple[str, int], list[tuple[int, float]]] = {}

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(os.path.join(tmp, "redis"))
        server.start()
        try:
            registry = open_registry(server.url)
            client = redis.Redis.from_url(server.url, decode_responses=True)
            follower = RegistryFollower(server.url, refresh_interval_s=0.0, max_staleness_s=3600)
            confirmer = RegistryConfirmer(server.url, retry_budget_s=10)
            have = 0
            for table in tables:
                _grow_table(server, registry, have, table)
                have = table
                exact = follower.current(force=True)  # one delta query brings the set up to date
                bloom = BloomFilter(exact.hashes)
                universe = max(100_000, 2 * table)
                for rows in batches:
                    batch = _batch(rows, universe, rng)
                    expected = split_batch(batch, exact)[0].num_rows
                    timings = _measure(batch, exact, bloom, follower, confirmer, client, remote_rows)
                    assert seed_local(client, batch).num_rows == expected  # all methods agree
                    assert _bloom_filter(batch, bloom, confirmer).num_rows == expected
                    for strategy, seconds in timings.items():
                        results.setdefault((strategy, rows), []).append((table, seconds))
                        emit(
                            BENCH,
                            "batch_latency_ms",
                            seconds * 1000,
                            "ms",
                            strategy=strategy,
                            table_subjects=table,
                            batch_sessions=rows,
                            sampled=strategy == "seed_remote" and remote_rows is not None,
                        )
                    for strategy in ("broadcast", "state", "lookup", "bloom"):
                        for seed in ("seed_local", "seed_remote"):
                            emit(
                                BENCH,
                                f"speedup_vs_{seed}",
                                timings[seed] / timings[strategy],
                                "x",
                                strategy=strategy,
                                table_subjects=table,
                                batch_sessions=rows,
                            )
            client.close()
            registry.close()
            confirmer.close()
        finally:
            server.stop()
    _plot(results, args.plot)


def _measure(batch, exact, bloom, follower, confirmer, client, remote_rows: int | None) -> dict[str, float]:
    """Seconds per micro-batch for each method (best of 3 for ours, one run for the slow seed ones)."""
    timings = {
        "seed_local": _time(lambda: seed_local(client, batch), 1),
        "broadcast": _time(lambda: split_batch(batch, follower.current(force=True)), 3),
        "state": _time(lambda: split_batch(batch, exact), 3),
        "lookup": _time(lambda: split_batch(batch, confirmer.forgotten_among(distinct_ids(batch))), 3),
        "bloom": _time(lambda: _bloom_filter(batch, bloom, confirmer), 3),
    }
    if remote_rows is None:
        timings["seed_remote"] = _time(lambda: seed_remote(client, batch), 1)
    else:
        sample = batch.slice(0, remote_rows)
        timings["seed_remote"] = _time(lambda: seed_remote(client, sample), 1) * batch.num_rows / remote_rows
    return timings


def _bloom_filter(batch: pa.RecordBatch, bloom: BloomFilter, confirmer: RegistryConfirmer) -> pa.RecordBatch:
    rows = np.flatnonzero(bloom.might_contain_hashes(hash_ids(batch.column("user_id"))))
    if not rows.size:
        return batch
    return split_batch(batch, confirmer.forgotten_among(distinct_ids(batch, pa.array(rows))))[0]


def _plot(results: dict, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# matplotlib not installed: no plot (pip install -e '.[bench]')")
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sizes = sorted({rows for _, rows in results})
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    styles = {
        "seed_local": "o--",
        "seed_remote": "s--",
        "broadcast": "o-",
        "state": "^-",
        "lookup": "d-",
        "bloom": "v-",
    }
    for ax, rows in zip(axes[0], sizes):
        for (strategy, r), points in sorted(results.items()):
            if r != rows:
                continue
            xs, ys = zip(*points)
            ax.plot(xs, [y * 1000 for y in ys], styles.get(strategy, "-"), label=strategy)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("deletion table size (subjects)")
        ax.set_ylabel("filter latency per micro-batch (ms)")
        ax.set_title(f"{rows:,} sessions per micro-batch")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"# plot written to {path}")


if __name__ == "__main__":
    main()
