"""One purge variant for bench/purge.py, in its own process: commands on stdin, results on stdout.

The bench starts one worker per variant (this checkout's code, or an older commit's
``beam_rtbf`` on PYTHONPATH) and sends them the same purges in turn, so variants are
compared within one run, interleaved, each paying its start-up (imports, a warm-up
purge) once. Only APIs that older commits have too are used here.

    {"archive": DIR, "work": DIR, "subjects": [...]}  ->  {"elapsed_s": ..., "summary": {...}, ...}
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time

from beam_rtbf.manifests.build import build_manifest
from beam_rtbf.purge.pipeline import run_purge
from beam_rtbf.records import ErasureRequest
from beam_rtbf.registry import open_registry

REQUESTED_AT_MS = 1_767_225_600_000 + 400 * 3_600_000


def _register(root: str, subjects: list[str]) -> str:
    """Requests in an embedded registry and their manifests (archive files left to the index)."""
    import pyarrow as pa

    registry_url = f"embedded://{root}/registry.sqlite"
    manifests = os.path.join(root, "manifests")
    os.makedirs(manifests, exist_ok=True)
    with open_registry(registry_url) as registry:
        accepted = registry.add([ErasureRequest(f"req-{s}", s, REQUESTED_AT_MS) for s in subjects])
    empty = pa.table({"path": pa.array([], pa.string())})
    for a in accepted:
        manifest = build_manifest(a, a.accepted_at_ms, empty, 60, [], 0)
        with open(os.path.join(manifests, f"{a.request.request_id}.json"), "w") as handle:
            json.dump(manifest, handle)
    return registry_url


def purge(archive: str, work: str, subjects: list[str]) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(archive, os.path.join(work, "archive"))
    registry_url = _register(work, subjects)
    argv = [f"--output={work}", f"--registry={registry_url}", "--max_total_share=1", "--max_partition_share=1"]
    started, cpu_started = time.perf_counter(), time.process_time()
    summary = run_purge(argv)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    report = os.path.join(work, "receipts", "_runs", f"{summary.get('run')}-verification.json")
    by_metadata = {}
    if os.path.exists(report):
        with open(report) as handle:
            by_metadata = json.load(handle).get("by_file_metadata", {})
    shutil.rmtree(work, ignore_errors=True)
    checked = summary.get("verification", {})
    return {
        "elapsed_s": elapsed,
        "cpu_s": cpu,  # all threads of this process: steadier than wall time on a shared machine
        "verified": summary.get("verified"),
        "files_planned": summary.get("files_planned"),
        "records_removed": summary.get("archive_records_removed"),
        "verification_s": checked.get("elapsed_s"),
        "verification_scanned": checked.get("scanned"),
        "verification_by_file_metadata": by_metadata,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    os.environ.setdefault("RTBF_SUBJECT_HASH_KEY", "bench")
    out, sys.stdout = sys.stdout, sys.stderr  # what the purge prints must not mix with the replies
    print(json.dumps({"ready": True}), file=out, flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        try:
            result = purge(command["archive"], command["work"], command["subjects"])
        except Exception as exc:  # reported to the bench, which stops with it
            result = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result), file=out, flush=True)


if __name__ == "__main__":
    main()
