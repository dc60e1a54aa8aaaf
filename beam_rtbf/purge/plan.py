"""Which files a batch of requests touches, and the blast-radius guard that judges the batch.

The subject index names the archive files (and index files) holding each
identifier, so a purge reads only those, not the whole archive; ``full_scan``
reads every file instead (for an archive whose index is suspect). A listing of
the archive root adds what the index cannot name: Parquet files no index file
lists, and leftovers of crashed runs (``.tmp-*`` temporaries), which are
rewritten like any other file. Dead-letter files (temporaries included) hold raw
records that never parsed, so they are always scanned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_rtbf.archive.idfilter import query_hashes
from beam_rtbf.archive.index import archive_data_files, index_files, lookup_hashes, lookup_index_file, resolve
from beam_rtbf.archive.write import INDEX_DIR
from beam_rtbf.purge.analytics import AnalyticsTask, analytics_tasks
from beam_rtbf.purge.analytics_table import AnalyticsTableTask, analytics_table_tasks
from beam_rtbf.purge.manifests import PendingManifest
from beam_rtbf.purge.rewrite import FileScan, FileTask, partition_of, read_journal
from beam_rtbf.sinks.files import join

__all__ = ["PurgePlan", "plan_purge", "GuardDecision", "judge_blast_radius"]


@dataclasses.dataclass(frozen=True)
class PurgePlan:
    tasks: tuple[FileTask, ...]
    id_requests: dict[str, tuple[str, ...]]  # identifier -> request ids naming it
    archive_records: int  # all records in the archive (the global share's denominator)
    archive_dir: str = ""
    analytics_tasks: tuple[AnalyticsTask, ...] = ()  # hour folders whose windows counted a subject
    table_tasks: tuple[AnalyticsTableTask, ...] = ()  # analytics tables (PostgreSQL) whose rows counted one


def plan_purge(
    manifests: Sequence[PendingManifest],
    archive_dir: str,
    deadletter_dir: str,
    full_scan: bool = False,
    analytics_dir: str | None = None,
    journal_dir: str | None = None,
) -> PurgePlan:
    id_requests: dict[str, set[str]] = {}
    for manifest in manifests:
        for subject_id in manifest.subject_ids:
            id_requests.setdefault(subject_id, set()).add(manifest.request_id)
    ids = sorted(id_requests)
    hashes, keys = lookup_hashes(ids), query_hashes(ids)  # once, not per index file
    pending = {m.request_id for m in manifests}
    # Stored paths are relative to the archive root (or full URIs): resolved here, so the purge
    # works from any working directory and on a moved output folder.
    data_paths: set[str] = {resolve(archive_dir, p) for m in manifests for p in m.archive_paths}
    index_paths: set[str] = set()
    indexed: set[str] = set()
    archive_records = 0
    for path in index_files(archive_dir):
        # The footer names the files and counts the records; only row groups that may hold an id are read.
        lookup = lookup_index_file(path, ids, hashes, ["path"], keys)
        indexed.update(resolve(archive_dir, p) for p in lookup.paths)
        archive_records += lookup.user_id_records
        found = lookup.rows
        if found.num_rows or _journaled_for(journal_dir, path, pending):
            # A journaled index file lost its rows in a run that crashed before its receipts:
            # planning it again puts its counts in this run's receipts.
            index_paths.add(path)
            data_paths.update(resolve(archive_dir, p) for p in found.column("path").to_pylist())
    if full_scan:
        data_paths.update(archive_data_files(archive_dir))
    unindexed, leftover_index = _unindexed_files(archive_dir, indexed)
    data_paths.update(unindexed)
    archive_records += sum(_parquet_rows(p) for p in unindexed)  # the guard's denominator counts them too
    index_paths.update(leftover_index)
    dead_paths = [
        m.path for result in FileSystems.match([join(deadletter_dir, "*.jsonl")]) for m in result.metadata_list
    ]
    tasks = (
        [FileTask("archive", p) for p in sorted(data_paths)]
        + [FileTask("index", p) for p in sorted(index_paths)]
        + [FileTask("deadletter", p) for p in sorted(dead_paths)]
    )
    analytics = tuple(analytics_tasks(manifests, analytics_dir)) if analytics_dir else ()
    return PurgePlan(
        tuple(tasks),
        {k: tuple(sorted(v)) for k, v in id_requests.items()},
        archive_records,
        archive_dir,
        analytics,
        tuple(analytics_table_tasks(manifests)),
    )


def _unindexed_files(archive_dir: str, indexed: set[str]) -> tuple[list[str], list[str]]:
    """Parquet files under the archive root that no index file names: data files and index temporaries."""
    data, index = [], []
    for result in FileSystems.match([join(archive_dir, "**")]):
        for m in result.metadata_list:
            if not m.path.endswith(".parquet") or m.path in indexed:
                continue
            if f"/{INDEX_DIR}/" in m.path:
                if "/.tmp-" in m.path:  # a crashed index write: finished index files are read above
                    index.append(m.path)
            else:
                data.append(m.path)
    return data, index


def _parquet_rows(path: str) -> int:
    """Rows of a Parquet file from its footer; 0 if unreadable (the rewrite and the verification report it)."""
    try:
        with FileSystems.open(path) as handle:
            return pq.ParquetFile(handle).metadata.num_rows
    except (pa.ArrowException, OSError):
        return 0


def _journaled_for(journal_dir: str | None, path: str, requests: set[str]) -> bool:
    return bool(journal_dir) and bool(set(read_journal(journal_dir, path)) & requests)


@dataclasses.dataclass(frozen=True)
class GuardDecision:
    allowed: bool
    reasons: tuple[str, ...]
    removing: int
    archive_records: int
    partitions: dict[str, tuple[int, int]]  # partition -> (removing, records)
    unreadable: tuple[str, ...]


def judge_blast_radius(
    scans: Iterable[FileScan],
    archive_records: int,
    max_partition_share: float,
    max_total_share: float,
    min_partition_records: int,
    confirmed: bool,
) -> GuardDecision:
    """Stop the whole batch if it would remove too large a share of a partition or of the archive.

    A bad manifest or a subject id like "" or "unknown" can match a large part of
    the archive; the guard turns that into a report instead of a deletion. Small
    partitions (fewer than ``min_partition_records``) are judged only by the global share.
    """
    partitions: dict[str, list[int]] = {}
    removing = 0
    unreadable = []
    for scan in scans:
        if scan.error:
            unreadable.append(scan.task.path)
        if scan.task.kind != "archive":
            continue
        entry = partitions.setdefault(partition_of(scan.task.path), [0, 0])
        entry[0] += scan.removed_total
        entry[1] += scan.total
        removing += scan.removed_total
    reasons = []
    for partition, (gone, records) in sorted(partitions.items()):
        if records >= min_partition_records and gone > max_partition_share * records:
            reasons.append(
                f"{partition}: would remove {gone} of {records} records ({gone / records:.1%} > "
                f"{max_partition_share:.1%})"
            )
    if archive_records and removing > max_total_share * archive_records:
        reasons.append(
            f"archive: would remove {removing} of {archive_records} records "
            f"({removing / archive_records:.1%} > {max_total_share:.1%})"
        )
    return GuardDecision(
        allowed=confirmed or not reasons,
        reasons=tuple(reasons),
        removing=removing,
        archive_records=archive_records,
        partitions={k: (v[0], v[1]) for k, v in partitions.items()},
        unreadable=tuple(sorted(unreadable)),
    )
