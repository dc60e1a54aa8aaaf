"""Purge of one request and of a batch of requests on a partitioned archive, old code against new.

    python bench/purge.py            # 10M records, 1 request x3 and 1,000 requests, per variant
    python bench/purge.py --quick    # 500K records in 60 partitions, 1 and 50 requests, two variants

The archive is laid out as ``beam-rtbf run`` writes it (hourly Parquet partitions plus the
subject index; 240 partitions, ~20 sessions per user, so one subject is in ~20 partition
files) and built once per layout into ``--cache`` (reused while the writer's code is the same):

- ``legacy``: as the archive writer wrote it before identifier filters and the bucketed
  index (plain Parquet files; the index of each of 8 runs in one unsorted file);
- ``current``: this checkout's writer (``write_data_file``, ``write_index_files``).

Variants (``--variants``), each in its own worker process (``_purge_worker.py``), started once,
warmed up with a tiny purge, then sent the same purges in turn (interleaved, order rotated),
each on a fresh copy of its archive:

- ``old@legacy``: ``beam_rtbf`` of ``--baseline_ref`` (extracted with ``git archive``) on the
  legacy layout: what a purge cost before;
- ``new@legacy``: this code on the legacy layout (an archive written before the upgrade);
- ``new@current``: this code on the current layout;
- ``old@current`` (not by default): ``--baseline_ref`` on the current layout, e.g. the previous
  head to measure a change of the purge itself in the same run.

Timed: ``run_purge`` from the call to the summary (planning, the Beam pipeline on the local
runner, rewrites, the independent verification, receipts); not the copy or registration.
``cpu_s`` beside each time is the worker's CPU time over the same span (every thread; the
local runner runs in the worker's process): steadier than wall time when other jobs share
the machine.
``floor``: the same one-request purge on an archive of the same files with 10 records each
(2,400 records), interleaved with the others:
the fixed cost of a purge run (Beam graph and runner, registry, receipts) on this machine;
``single_above_floor_s`` is what grows with the archive.
Every purge must end with every request verified and the same records removed by every variant.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from _common import emit  # noqa: I001 - sets sys.path for beam_rtbf

from beam_rtbf.archive.write import INDEX_DIR, index_rows, partition_path, write_data_file, write_index_files
from beam_rtbf.records import SESSION_SCHEMA

BENCH = "purge"
T0 = 1_767_225_600_000
HOUR = 3_600_000
PARTITIONS = 240  # ten days of hourly partitions (--quick: 60)
RUNS = 8  # the runs that wrote the archive: each wrote the index of its partitions
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE_REF = "fba5372"  # main before identifier filters and the bucketed index
VARIANTS = ("old@legacy", "new@legacy", "new@current")  # also accepted: old@current (--baseline_ref's code)


def _partition_table(rng: np.random.Generator, start: int, rows: int, users: int) -> pa.Table:
    uid = rng.integers(0, users, rows)
    actions = pa.array(["show", "search", "click", "book"])
    return pa.table(
        {
            "user_id": pa.array(np.char.add("u", uid.astype(str)).astype(object), pa.string()),
            "event_time_ms": pa.array(np.sort(rng.integers(start, start + HOUR, rows)), pa.int64()),
            "action": actions.take(pa.array(rng.integers(0, 4, rows))),
            "action_type": pa.array(["view"] * rows),
            "action_detail": pa.nulls(rows, pa.string()),
            "device_type": pa.array(["iPhone"] * rows),
            "secs_elapsed": pa.array(rng.random(rows) * 100),
            "event_id": pa.nulls(rows, pa.string()),
            "email": pa.nulls(rows, pa.string()),
            "device_id": pa.nulls(rows, pa.string()),
        },
        schema=SESSION_SCHEMA,
    )


def build_archive(archive: str, records: int, users: int, layout: str, partitions: int, seed: int = 7) -> None:
    """Hourly partitions of uniform users; the same records in either layout."""
    rng = np.random.default_rng(seed)
    per_partition = records // partitions
    os.makedirs(os.path.join(archive, INDEX_DIR), exist_ok=True)
    per_run = -(-partitions // RUNS)
    for run in range(RUNS):
        index_parts = []
        for part in range(run * per_run, min(partitions, (run + 1) * per_run)):
            start = T0 + part * HOUR
            table = _partition_table(rng, start, per_partition, users)
            relative = f"{partition_path(start, 3600)}/part-run{run}.parquet"
            path = os.path.join(archive, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if layout == "legacy":
                pq.write_table(table, path, compression="zstd")
            else:
                write_data_file(path, table)
            index_parts.append(index_rows(table, relative))
        rows = pa.concat_tables(index_parts)
        if layout == "legacy":
            pq.write_table(rows, os.path.join(archive, INDEX_DIR, f"part-run{run}.parquet"), compression="zstd")
        else:
            write_index_files(os.path.join(archive, INDEX_DIR), f"part-run{run}", rows)


def _writer_fingerprint() -> str:
    """Changes when the archive writer's code does: a cached current-layout archive is rebuilt then."""
    digest = hashlib.sha256()
    for name in ("archive/write.py", "archive/idfilter.py", "archive/index_footer.py", "identifiers.py"):
        with open(os.path.join(REPO, "beam_rtbf", name), "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:10]


def cached_archive(cache: str, records: int, users: int, layout: str, partitions: int) -> str:
    key = "v1" if layout == "legacy" else _writer_fingerprint()
    archive = os.path.join(cache, f"archive-{layout}-{records}-{users}-{partitions}-{key}")
    if not os.path.isdir(archive):
        for stale in glob.glob(os.path.join(cache, f"archive-{layout}-{records}-{users}-{partitions}-*")):
            shutil.rmtree(stale, ignore_errors=True)  # written by an older writer: rebuilt below
        started = time.perf_counter()
        building = f"{archive}.building-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        build_archive(building, records, users, layout, partitions)
        os.rename(building, archive)
        print(f"built {archive} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return archive


def baseline_code(cache: str, ref: str) -> str | None:
    """``beam_rtbf`` of ``ref`` extracted from this repository's git history (None without git or ref)."""
    try:
        sha = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--verify", f"{ref}^{{commit}}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        print(f"no git commit {ref!r}: the old@ variants are skipped", file=sys.stderr)
        return None
    target = os.path.join(cache, f"code-{sha[:12]}")
    if not os.path.isdir(target):
        staging = f"{target}.tmp-{os.getpid()}"
        os.makedirs(staging, exist_ok=True)
        archive = subprocess.run(["git", "-C", REPO, "archive", sha, "beam_rtbf"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", staging], input=archive.stdout, check=True)
        os.rename(staging, target)
    return target


class Worker:
    """A variant's worker process (see ``_purge_worker.py``)."""

    def __init__(self, name: str, code: str, cache: str) -> None:
        self.name = name
        env = {**os.environ, "PYTHONPATH": code}
        log = open(os.path.join(cache, f"worker-{name.replace('@', '-')}.log"), "w")  # noqa: SIM115
        worker = os.path.join(REPO, "bench", "_purge_worker.py")
        self._process = subprocess.Popen(
            [sys.executable, worker], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env
        )
        self._read()  # ready

    def _read(self) -> dict:
        line = self._process.stdout.readline()
        if not line:
            raise SystemExit(f"bench purge: worker {self.name} stopped (see its log in the cache folder)")
        return json.loads(line)

    def purge(self, archive: str, work: str, subjects: list[str]) -> dict:
        self._process.stdin.write(json.dumps({"archive": archive, "work": work, "subjects": subjects}) + "\n")
        self._process.stdin.flush()
        result = self._read()
        if "error" in result:
            raise SystemExit(f"bench purge: {self.name}: {result['error']}")
        if result["verified"] != len(subjects):
            raise SystemExit(f"bench purge: {self.name}: {result['verified']} of {len(subjects)} verified")
        return result

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None, help="requests in the batch purge (0: none)")
    parser.add_argument("--reps", type=int, default=None, help="one-request purges per variant")
    parser.add_argument("--variants", default=None, help=f"of {','.join(VARIANTS)} (--quick: no new@legacy)")
    parser.add_argument("--baseline_ref", default=BASELINE_REF, help="git commit the old@ variants run")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "rtbf-bench-purge"))
    args = parser.parse_args()
    records = args.records or (500_000 if args.quick else 10_000_000)
    batch = args.batch if args.batch is not None else (50 if args.quick else 1000)
    reps = args.reps or (1 if args.quick else 3)
    partitions = 60 if args.quick else PARTITIONS
    users = records // 20  # ~20 sessions per user: a subject touches ~20 partitions
    os.makedirs(args.cache, exist_ok=True)
    default = [v for v in VARIANTS if not (args.quick and v == "new@legacy")]
    wanted = [v for v in args.variants.split(",") if v] if args.variants else default
    old_code = baseline_code(args.cache, args.baseline_ref) if any(v.startswith("old@") for v in wanted) else None
    codes = {"old": old_code, "new": REPO}
    variants = [v for v in wanted if codes[v.split("@")[0]]]
    archives = {
        layout: cached_archive(args.cache, records, users, layout, partitions)
        for layout in {v.split("@")[1] for v in variants}
    }
    tiny = cached_archive(args.cache, 10 * partitions, 120, "legacy", partitions)  # the same files, 10 rows each

    rng = np.random.default_rng(11)
    subjects = [f"u{i}" for i in rng.choice(users, max(batch, 1), replace=False)]
    workers = {v: Worker(v, codes[v.split("@")[0]], args.cache) for v in variants}
    results: dict[tuple[str, str], list[dict]] = {}
    try:
        for worker in workers.values():  # imports done, lazy ones too: not part of any timing
            worker.purge(tiny, os.path.join(args.cache, "work-warmup"), ["u1"])
        # "floor": one request on the same files with 10 records each, the fixed cost of a purge run (Beam graph,
        # runner, registry, receipts), in the same run as the others.
        rounds = [("floor", ["u1"]), ("single", subjects[:1])] * reps + ([("batch", subjects)] if batch else [])
        for i, (kind, chosen) in enumerate(rounds):
            order = variants[i % len(variants) :] + variants[: i % len(variants)]
            for name in order:
                archive = tiny if kind == "floor" else archives[name.split("@")[1]]
                work = os.path.join(args.cache, f"work-{name.replace('@', '-')}")
                results.setdefault((name, kind), []).append(workers[name].purge(archive, work, chosen))
    finally:
        for worker in workers.values():
            worker.close()

    params = {"records": records, "partitions": partitions, "users": users, "baseline_ref": args.baseline_ref}
    kinds = ("single", "batch") if batch else ("single",)
    for kind in (*kinds, "floor"):
        removed = {name: results[(name, kind)][0]["records_removed"] for name in variants}
        if len(set(removed.values())) != 1:
            raise SystemExit(f"bench purge: variants removed different records ({kind}): {removed}")
    medians = {}
    for (name, kind), runs in sorted(results.items()):
        n = batch if kind == "batch" else 1
        times = [r["elapsed_s"] for r in runs]
        medians[(name, kind)] = statistics.median(times)
        last = runs[-1]
        common = {**params, "variant": name, "requests": n, "runs": len(runs)}
        if kind == "floor":
            common["records"] = 10 * partitions
        emit(
            BENCH,
            f"{kind}_s",
            medians[(name, kind)],
            "s",
            **common,
            all_s=[round(t, 3) for t in times],
            cpu_s=round(statistics.median(r["cpu_s"] for r in runs), 3),
            files_planned=last["files_planned"],
            records_removed=last["records_removed"],
            peak_rss_mb=round(last["peak_rss_mb"]),
        )
        scanned = last["verification_scanned"] or {}
        emit(
            BENCH,
            f"{kind}_verification_s",
            statistics.median(r["verification_s"] for r in runs),
            "s",
            **common,
            files_scanned=sum(v for k, v in scanned.items() if k.endswith("_files")),
            rows_scanned=scanned.get("rows"),
            proven_by_file_metadata=last["verification_by_file_metadata"] or {"files": 0, "rows": 0},
        )
    for name in variants:
        emit(
            BENCH,
            "single_above_floor_s",
            medians[(name, "single")] - medians[(name, "floor")],
            "s",
            **params,
            variant=name,
            requests=1,
            note="one request on the big archive minus the floor: what grows with the records",
        )
    for kind in kinds:
        for name in variants:
            if name.startswith("old@"):
                continue
            # Against the old code on the same layout when it ran, else against old@legacy.
            baseline = next((b for b in (f"old@{name.split('@')[1]}", "old@legacy") if (b, kind) in medians), None)
            if baseline:
                emit(
                    BENCH,
                    f"{kind}_speedup",
                    medians[(baseline, kind)] / medians[(name, kind)],
                    "x",
                    **params,
                    variant=name,
                    baseline=baseline,
                    requests=1 if kind == "single" else batch,
                )


if __name__ == "__main__":
    sys.exit(main())
