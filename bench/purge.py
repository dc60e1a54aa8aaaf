"""Purge throughput on a partitioned archive, and one request vs a batch of requests.

Builds an archive laid out exactly as ``beam-rtbf run`` writes it (hourly Parquet
partitions plus the subject index), registers erasure requests and their manifests,
then times ``beam-rtbf purge``:

- ``single``: one request (a subject with records in a few partitions);
- ``batch``: N requests in one purge run (the subjects touch most partitions).

The baseline in the same run is the single-request cost: purging N requests one run
at a time costs about N times that, so ``per_request_speedup`` says what batching buys.

Verification (every stored file re-read after the rewrites, see purge/verify.py) is
part of both timings and is also reported on its own, beside the purge cost:

- ``verification_s``: listing to summary inside the purge pipeline (wall clock);
- ``verification_scan_s``: the same scan of the purged archive run alone in this
  process, one file after another (its pure cost on one core), and rows/s for both.

    python bench/purge.py            # 10M records, 1000 requests
    python bench/purge.py --quick    # 1M records, 100 requests, under a minute
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from _common import emit, timer  # noqa: I001 - sets sys.path for beam_rtbf

from beam_rtbf.archive.write import INDEX_DIR, index_rows, partition_path
from beam_rtbf.manifests.build import build_manifest
from beam_rtbf.purge.pipeline import run_purge
from beam_rtbf.purge.verify import VerifyIdentifiers, list_stored_files, summarize, verify_file
from beam_rtbf.records import SESSION_SCHEMA, ErasureRequest
from beam_rtbf.registry import open_registry

T0 = 1_767_225_600_000
HOUR = 3_600_000


def build_archive(root: str, records: int, partitions: int, users: int, seed: int) -> None:
    """Hourly partitions of sessions; user ids uniform, so a user has ~records/users sessions."""
    rng = np.random.default_rng(seed)
    per_partition = records // partitions
    archive = os.path.join(root, "archive")
    index_parts = []
    actions = pa.array(["show", "search", "click", "book"])
    for part in range(partitions):
        start = T0 + part * HOUR
        uid = rng.integers(0, users, per_partition)
        user_ids = pa.array(np.char.add("u", uid.astype(str)).astype(object), pa.string())
        times = np.sort(rng.integers(start, start + HOUR, per_partition))
        table = pa.table(
            {
                "user_id": user_ids,
                "event_time_ms": pa.array(times, pa.int64()),
                "action": actions.take(pa.array(rng.integers(0, 4, per_partition))),
                "action_type": pa.array(["view"] * per_partition),
                "action_detail": pa.nulls(per_partition, pa.string()),
                "device_type": pa.array(["iPhone"] * per_partition),
                "secs_elapsed": pa.array(rng.random(per_partition) * 100),
                "event_id": pa.nulls(per_partition, pa.string()),
                "email": pa.nulls(per_partition, pa.string()),
                "device_id": pa.nulls(per_partition, pa.string()),
            },
            schema=SESSION_SCHEMA,
        )
        path = os.path.join(archive, partition_path(start, 3600), "part-bench.parquet")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(table, path, compression="zstd")
        index_parts.append(index_rows(table, path))
    os.makedirs(os.path.join(archive, INDEX_DIR), exist_ok=True)
    # Several index files, as many runs would leave.
    index = pa.concat_tables(index_parts)
    for i, chunk in enumerate(np.array_split(np.arange(index.num_rows), 8)):
        pq.write_table(index.take(pa.array(chunk)), os.path.join(archive, INDEX_DIR, f"part-{i}.parquet"))


def register(root: str, registry_url: str, subjects: list[str]) -> None:
    manifests = os.path.join(root, "manifests")
    os.makedirs(manifests, exist_ok=True)
    requests = [ErasureRequest(f"req-{s}", s, T0 + 400 * HOUR) for s in subjects]
    with open_registry(registry_url) as registry:
        accepted = registry.add(requests)
    empty = pa.table({"path": pa.array([], pa.string())})
    for a in accepted:
        manifest = build_manifest(a, a.accepted_at_ms, empty.slice(0, 0), 60, [], 0)
        with open(os.path.join(manifests, f"{a.request.request_id}.json"), "w") as handle:
            json.dump(manifest, handle)


def run_once(workdir: str, label: str, records: int, partitions: int, users: int, subjects: list[str]) -> dict:
    root = os.path.join(workdir, label)
    build_archive(root, records, partitions, users, seed=7)
    registry_url = f"embedded://{root}/registry.sqlite"
    register(root, registry_url, subjects)
    argv = [f"--output={root}", f"--registry={registry_url}", "--max_total_share=1", "--max_partition_share=1"]
    with timer() as t:
        summary = run_purge(argv)
    if summary.get("verified") != len(subjects):
        raise SystemExit(f"bench purge {label}: not all verified: {json.dumps(summary)[:2000]}")
    summary["elapsed_wall_s"] = t["s"]
    summary["standalone_scan"] = standalone_scan(root, subjects)
    shutil.rmtree(root)
    return summary


def standalone_scan(root: str, subjects: list[str]) -> dict:
    """The verification scan alone, in this process, file after file: what it costs on one core."""
    ids = VerifyIdentifiers({s: [f"req-{s}"] for s in subjects})
    with timer() as t:
        files = list_stored_files(os.path.join(root, "archive"), os.path.join(root, "deadletter"))
        checked = summarize([verify_file(f, ids) for f in files], [f"req-{s}" for s in subjects], 0.0)
    if any(checked.found.values()) or checked.unreadable:
        raise SystemExit(f"bench purge: standalone verification found records: {checked.to_dict()}"[:2000])
    return {"s": t["s"], "rows": checked.scanned["rows"], "bytes": checked.scanned["bytes"], "files": len(files)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    args = parser.parse_args()
    records = args.records or (1_000_000 if args.quick else 10_000_000)
    batch = args.batch or (100 if args.quick else 1000)
    partitions = 240  # ten days of hourly partitions
    users = records // 20  # ~20 sessions per user: a subject touches ~20 partitions
    os.environ.setdefault("RTBF_SUBJECT_HASH_KEY", "bench")
    rng = np.random.default_rng(11)
    subjects = [f"u{i}" for i in rng.choice(users, batch, replace=False)]
    params = {"records": records, "partitions": partitions, "users": users}
    with tempfile.TemporaryDirectory(prefix="rtbf-bench-purge-") as workdir:
        os.chdir(workdir)
        single = run_once(workdir, "single", records, partitions, users, subjects[:1])
        many = run_once(workdir, "batch", records, partitions, users, subjects)
    single_s, batch_s = single["elapsed_wall_s"], many["elapsed_wall_s"]
    emit(
        "purge",
        "single_request_s",
        single_s,
        "s",
        **params,
        requests=1,
        records_removed=single["archive_records_removed"],
        files=single["files_planned"],
    )
    emit(
        "purge",
        "batch_s",
        batch_s,
        "s",
        **params,
        requests=batch,
        records_removed=many["archive_records_removed"],
        files=many["files_planned"],
    )
    emit("purge", "batch_per_request_s", batch_s / batch, "s", **params, requests=batch)
    emit(
        "purge",
        "per_request_speedup",
        single_s / (batch_s / batch),
        "x",
        **params,
        requests=batch,
        baseline="one purge run per request",
    )
    emit(
        "purge",
        "archive_records_per_s",
        records / batch_s,
        "records/s",
        **params,
        requests=batch,
        note="archive records scanned and rewritten per second (the batch touches every partition)",
    )
    emit(
        "purge",
        "records_removed_per_s",
        many["archive_records_removed"] / batch_s,
        "records/s",
        **params,
        requests=batch,
    )
    for label, run, n in (("single", single, 1), ("batch", many, batch)):
        checked = run["verification"]
        scanned = checked["scanned"]
        files = sum(v for k, v in scanned.items() if k.endswith("_files"))
        common = {**params, "requests": n, "files_scanned": files, "rows_scanned": scanned["rows"]}
        emit(
            "purge",
            f"{label}_verification_s",
            checked["elapsed_s"],
            "s",
            **common,
            purge_s=run["elapsed_wall_s"],
            share_of_purge=round(checked["elapsed_s"] / run["elapsed_wall_s"], 3),
            note="inside the purge pipeline: storage listed after the rewrites to summary (wall clock)",
        )
        emit(
            "purge",
            f"{label}_verification_rows_per_s",
            scanned["rows"] / max(checked["elapsed_s"], 1e-9),
            "rows/s",
            **common,
            bytes_scanned=scanned["bytes"],
        )
        alone = run["standalone_scan"]
        emit(
            "purge",
            f"{label}_verification_scan_s",
            alone["s"],
            "s",
            **params,
            requests=n,
            files_scanned=alone["files"],
            rows_scanned=alone["rows"],
            rows_per_s=round(alone["rows"] / max(alone["s"], 1e-9)),
            note="the same scan alone in one process, file after file (one core)",
        )


if __name__ == "__main__":
    sys.exit(main())
