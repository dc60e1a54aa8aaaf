"""Rewrite one stored file without the records of the subjects being purged.

Three kinds of file hold a subject's data after a run: archive partition files
(Parquet sessions), the archive's subject index (Parquet), and dead letters
(JSON lines holding raw records that failed to parse). Each is rewritten the
same way:

1. read it and find the subjects' records (user id or any alias; a dead letter
   by its record's id fields, or by raw tokens only if it does not parse: see
   ``subjects.py``);
2. journal the per-request counts (so a re-run after a crash still reports
   what this file lost, although the file then holds nothing more to remove);
3. encode the kept records and verify them (row count, zero subject records);
4. replace the original atomically (the path always names either the old or
   the new file, never both or neither): a verified temporary sibling renamed
   onto it on local/HDFS paths, one PUT on object stores, followed there by
   deleting the object's older versions, which would still hold the records;
5. check the final file: on object stores re-scan what the PUT stored; where a
   verified temporary was renamed onto the path, check that the path holds those
   bytes (size and footer row count); the receipt's ``verified`` also needs the
   independent scan of every stored file in ``verify.py``.

A re-run finds nothing left to remove and changes nothing, so a crash at any
point followed by a re-run ends in the state of one clean run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_rtbf.archive.idfilter import encode_row_groups, filter_entry, filter_keys
from beam_rtbf.archive.index_footer import read_index_footer
from beam_rtbf.archive.splice import SpliceError, splice_out
from beam_rtbf.archive.write import DATA_DICTIONARY_COLUMNS, INDEX_ID_COLUMNS, write_data_parquet, write_index_file
from beam_rtbf.identifiers import canonical_array
from beam_rtbf.purge import faults as fault_points
from beam_rtbf.purge.faults import FaultPoints
from beam_rtbf.purge.lock import LockLost, check_held
from beam_rtbf.purge.subjects import SubjectIdentifiers
from beam_rtbf.records import iso_ms, now_ms
from beam_rtbf.sinks.files import is_object_store, join, write_bytes_atomically
from beam_rtbf.sinks.versions import CONDITION_FAILED, s3_client, s3_error_code, split_s3_path

__all__ = [
    "FileTask",
    "FileScan",
    "FileResult",
    "PurgeFileError",
    "scan_file",
    "scan_and_keep",
    "ScannedFile",
    "ReadBudget",
    "rewrite_file",
    "rewrite_or_error",
    "read_journal",
    "partition_of",
]

KINDS = ("archive", "index", "deadletter")


class PurgeFileError(RuntimeError):
    """A file could not be read or verified; nothing was replaced."""


@dataclasses.dataclass(frozen=True)
class FileTask:
    kind: str
    path: str


@dataclasses.dataclass(frozen=True)
class FileScan:
    """What a file holds: its records, and per request how many are the request's subjects'."""

    task: FileTask
    total: int
    removed_total: int
    removed: dict[str, int]
    error: str = ""


@dataclasses.dataclass(frozen=True)
class FileResult:
    """What the purge did to one file, per request; ``verified`` means a re-scan of the new content
    found zero records (read back from the stored temporary or object) and the path holds it."""

    task: FileTask
    status: str  # "purged" | "clean" | "blocked" | "error"
    records_before: int
    records_after: int
    removed: dict[str, int]  # this run's and earlier (journal) removals, per request
    verified: bool
    at: str
    detail: str = ""
    versions_deleted: int = 0
    matched_by: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # dead letters, per request


def partition_of(path: str) -> str:
    """The archive partition (its folder) a file belongs to."""
    return path.rsplit("/", 1)[0]


# -- reading and matching -----------------------------------------------------------------


def _read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as handle:
        return handle.read()


def _open_parquet(path: str) -> pq.ParquetFile:
    # Object stores: one GET of the whole object; local files: Arrow reads only the columns asked for.
    return pq.ParquetFile(io.BytesIO(_read_bytes(path)) if "://" in path else path)


def _read_columns(parquet: pq.ParquetFile, columns: Sequence[str] | None) -> pa.Table:
    """All rows; with ``columns`` only those of them the file has (the row count stays the file's)."""
    if columns is None:
        return parquet.read()  # the whole file: Arrow decodes columns in parallel, as pq.read_table does
    names = set(parquet.schema_arrow.names)  # built anew by each access: once per file
    present = [c for c in columns if c in names]
    if not present:  # no identifier column: a table of the file's row count and no column
        return pa.table({"_": pa.nulls(parquet.metadata.num_rows)}).drop_columns(["_"])
    return parquet.read(columns=present, use_threads=False)


def _read_table(path: str, columns: Sequence[str] | None = None) -> pa.Table:
    try:
        return _read_columns(_open_parquet(path), columns)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise PurgeFileError(f"{path}: not a readable Parquet file ({exc})") from exc


def _read_for_rewrite(task: FileTask) -> tuple[pa.Table | list[bytes], tuple[int, int] | None]:
    """The whole file, and for an index file the hash bucket its footer names, which its rewrite
    keeps (None: an index file written before buckets, which holds every identifier)."""
    if task.kind != "index":
        return _load(task), None
    try:
        parquet = _open_parquet(task.path)
        footer = read_index_footer(parquet.metadata)
        return _read_columns(parquet, None), ((footer.bucket, footer.buckets) if footer else None)
    except (pa.ArrowInvalid, OSError) as exc:
        raise PurgeFileError(f"{task.path}: not a readable Parquet file ({exc})") from exc


@dataclasses.dataclass(frozen=True)
class _StoredParquet:
    """An archive data file read once: its bytes (what a splice copies row groups from) and the
    Parquet reader over them (the whole rows, should the file have to be re-encoded)."""

    data: bytes
    parquet: pq.ParquetFile


def _read_archive_file(task: FileTask) -> tuple[pa.Table, _StoredParquet]:
    """The identifier columns of an archive data file (to match), and the file as stored."""
    try:
        data = _read_bytes(task.path)
        parquet = pq.ParquetFile(pa.BufferReader(data))
        return _read_columns(parquet, INDEX_ID_COLUMNS), _StoredParquet(data, parquet)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise PurgeFileError(f"{task.path}: not a readable Parquet file ({exc})") from exc


class _Matcher:
    """Finds the subjects' records in a table or in dead-letter lines, and which requests they belong to."""

    def __init__(self, id_requests: Mapping[str, Sequence[str]]) -> None:
        self.id_requests = id_requests
        self.ids = pa.array(sorted(id_requests), pa.string())
        self._subjects: SubjectIdentifiers | None = None
        self.matched_by: dict[str, dict[str, int]] = {}  # request -> {"field"|"raw_token": lines}, last line_mask

    @property
    def subjects(self) -> SubjectIdentifiers:
        """The dead-letter rules (token patterns): built on first use, as only dead letters need them
        and a matcher is made per file."""
        if self._subjects is None:
            self._subjects = SubjectIdentifiers(self.id_requests)
        return self._subjects

    def table_mask(self, table: pa.Table, columns: Sequence[str]) -> tuple[np.ndarray, dict[str, int]]:
        mask = np.zeros(table.num_rows, dtype=bool)
        hits: list[np.ndarray] = []
        # An all-null column matches nothing: its canonical form is not computed.
        present = [c for c in columns if c in table.column_names and table.column(c).null_count < table.num_rows]
        # Stored values are compared in canonical form (written canonical since the parser made them so;
        # older files may not be): the ids (from the registry) are canonical already.
        canonical = {column: canonical_array(table.column(column)) for column in present}
        for column in present:
            hit = pc.fill_null(pc.is_in(canonical[column], value_set=self.ids), False).to_numpy(zero_copy_only=False)
            hits.append(hit)
            mask |= hit
        per_request: dict[str, int] = {}
        for row in np.flatnonzero(mask):  # matched rows are few: per-row Python is fine here
            requests: set[str] = set()
            for column, hit in zip(present, hits):
                if hit[row]:
                    requests.update(self.id_requests[canonical[column][int(row)].as_py()])
            for request_id in requests:
                per_request[request_id] = per_request.get(request_id, 0) + 1
        return mask, per_request

    def line_mask(self, lines: Sequence[bytes]) -> tuple[np.ndarray, dict[str, int]]:
        """Dead letters of the subjects: by their record's id fields; raw tokens only if unparseable."""
        mask = np.zeros(len(lines), dtype=bool)
        per_request: dict[str, int] = {}
        self.matched_by = {}
        if not self.subjects:
            return mask, per_request
        for i, line in enumerate(lines):
            found, how = self.subjects.in_dead_letter(line)
            if found:
                mask[i] = True
                for request_id in self.subjects.requests_for(found):
                    per_request[request_id] = per_request.get(request_id, 0) + 1
                    by = self.matched_by.setdefault(request_id, {})
                    by[how] = by.get(how, 0) + 1
        return mask, per_request


def _columns_for(kind: str) -> Sequence[str]:
    return INDEX_ID_COLUMNS if kind == "archive" else ("user_id",)


def _load(task: FileTask, ids_only: bool = False) -> pa.Table | list[bytes]:
    """A file's records; ``ids_only``: of a Parquet file only the identifier columns (enough to match)."""
    if task.kind == "deadletter":
        return [line for line in _read_bytes(task.path).split(b"\n") if line.strip()]
    return _read_table(task.path, _columns_for(task.kind) if ids_only else None)


def _mask(task: FileTask, data: pa.Table | list[bytes], matcher: _Matcher) -> tuple[np.ndarray, dict[str, int]]:
    if task.kind == "deadletter":
        return matcher.line_mask(data)
    return matcher.table_mask(data, _columns_for(task.kind))


def scan_file(task: FileTask, id_requests: Mapping[str, Sequence[str]]) -> FileScan:
    """Count, without changing anything, what purging this file would remove (the guard's input)."""
    if not FileSystems.exists(task.path):
        return FileScan(task, 0, 0, {})
    try:
        data = _load(task, ids_only=True)
    except PurgeFileError as exc:
        return FileScan(task, 0, 0, {}, error=str(exc))
    mask, per_request = _mask(task, data, _Matcher(id_requests))
    return FileScan(task, len(mask), int(mask.sum()), per_request)


class ReadBudget:
    """Bytes of scanned files a purge may keep for their rewrites (shared by the scanning threads)."""

    def __init__(self, limit: int) -> None:
        self._left = limit
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        with self._lock:
            if size > self._left:
                return False
            self._left -= size
            return True


@dataclasses.dataclass(frozen=True)
class ScannedFile:
    """An archive file as the scan read it and matched it: its rewrite reuses both, so a one-step
    purge reads each file once, if the file is unchanged since (same inode, size, modification and
    change times; the purge lock keeps other purges out, and writers add files, never change one)."""

    stat: tuple[int, ...]
    ids: pa.Table
    stored: _StoredParquet
    mask: np.ndarray
    per_request: dict[str, int]

    def unchanged(self, task: FileTask) -> bool:
        try:
            return _identity(os.stat(task.path)) == self.stat
        except OSError:
            return False


def scan_and_keep(
    task: FileTask, id_requests: Mapping[str, Sequence[str]], budget: ReadBudget
) -> tuple[FileScan, ScannedFile | None]:
    """``scan_file``, keeping what it read of a local archive file for its rewrite while ``budget`` lasts."""
    if task.kind != "archive" or "://" in task.path:  # object stores: the rewrite reads after taking the ETag
        return scan_file(task, id_requests), None
    try:
        status = os.stat(task.path)
        ids, stored = _read_archive_file(task)
    except FileNotFoundError:
        return FileScan(task, 0, 0, {}), None
    except PurgeFileError as exc:
        return FileScan(task, 0, 0, {}, error=str(exc)), None
    mask, per_request = _mask(task, ids, _Matcher(id_requests))
    scan = FileScan(task, len(mask), int(mask.sum()), per_request)
    if not scan.removed_total or not budget.take(len(stored.data)):
        return scan, None
    return scan, ScannedFile(_identity(status), ids, stored, mask, per_request)


def _identity(status: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is written or replaced: its inode, size, and modification and change
    times (a copy can keep the modification time; the change time is set by the system on any write,
    rename or ``utime``)."""
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


# -- journal --------------------------------------------------------------------------------


def _journal_path(journal_dir: str, path: str) -> str:
    return join(journal_dir, hashlib.sha256(path.encode()).hexdigest()[:32] + ".json")


def read_journal(journal_dir: str, path: str) -> dict[str, int]:
    journal = _journal_path(journal_dir, path)
    if not FileSystems.exists(journal):
        return {}
    return dict(json.loads(_read_bytes(journal))["removed"])


def _write_journal(journal_dir: str, task: FileTask, removed: Mapping[str, int]) -> None:
    body = {"path": task.path, "kind": task.kind, "removed": dict(sorted(removed.items())), "at": iso_ms(now_ms())}
    write_bytes_atomically(_journal_path(journal_dir, task.path), json.dumps(body, sort_keys=True).encode())


# -- rewrite --------------------------------------------------------------------------------


def _encode(task: FileTask, kept: pa.Table | list[bytes], bucket: tuple[int, int] | None) -> bytes:
    """The kept records in the archive writer's own format: a Parquet file's footer (identifier
    filter; an index file's bucket, files and counts) is rebuilt from them."""
    if task.kind == "deadletter":
        return b"".join(line + b"\n" for line in kept)
    sink = io.BytesIO()
    if task.kind == "index":
        # Kept rows keep their order: hash order in a bucketed file; an older file is not sorted now.
        write_index_file(sink, kept, *(bucket or (0, 1)), sort=bucket is not None)
    else:
        write_data_parquet(sink, kept)
    return sink.getvalue()


def _encode_archive(task: FileTask, stored: _StoredParquet, ids: pa.Table, keep: np.ndarray) -> bytes:
    """An archive data file without the removed rows: the row groups that held none of them copied
    as they are (``splice.py``), else the whole file re-encoded. Either way the footer's identifier
    filter is built anew from the identifiers that remain."""

    def entries(rows: int, groups: list[int]) -> dict[bytes, bytes]:
        hashes, printable = filter_keys(ids.filter(pa.array(keep)).columns)
        return filter_entry(hashes, printable, ids.column_names, rows, groups)

    try:
        try:
            spliced = splice_out(
                stored.data, ~keep, lambda tables: encode_row_groups(tables, DATA_DICTIONARY_COLUMNS), entries
            )
        except SpliceError:
            spliced = None  # pyarrow read the file; only its layout is not one a splice copies: re-encode it
        if spliced is None:
            return _encode(task, _whole(stored, ids).filter(pa.array(keep)), None)
    except (pa.ArrowException, OSError) as exc:  # a column other than the identifiers does not decode
        raise PurgeFileError(f"not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    payload, groups = spliced
    _check_decodes(payload, int(keep.sum()), groups)
    return payload


def _whole(stored: _StoredParquet, ids: pa.Table) -> pa.Table:
    """Every column of the file, the identifier columns taken from ``ids`` (decoded once already)."""
    names = stored.parquet.schema_arrow.names
    others = [name for name in names if name not in ids.column_names]
    if len(others) + ids.num_columns != len(names):  # repeated names: read it all as it is
        return stored.parquet.read()
    rest = stored.parquet.read(columns=others)
    return pa.table(
        [ids.column(n) if n in ids.column_names else rest.column(n) for n in names],
        schema=stored.parquet.schema_arrow,
    )


def _check_decodes(payload: bytes, expected_rows: int, groups: Sequence[int]) -> None:
    """The re-encoded row groups of a spliced file decode, every column, to the rows the footer says:
    a group whose page offsets were moved wrong fails here, before anything is replaced. (The other
    groups' bytes and footer entries are the original's; the identifier columns of all of them are
    decoded by the verification of the stored temporary.)"""
    try:
        parquet = pq.ParquetFile(pa.BufferReader(payload))
        decoded = parquet.read_row_groups(groups, use_threads=False).num_rows
        stated = sum(parquet.metadata.row_group(g).num_rows for g in groups)
    except (pa.ArrowException, OSError) as exc:
        raise PurgeFileError(f"spliced file does not decode ({exc})") from exc
    if parquet.metadata.num_rows != expected_rows or decoded != stated:
        raise PurgeFileError(
            f"spliced file holds {parquet.metadata.num_rows} records ({decoded} decoded of {stated} "
            f"in its new row groups), expected {expected_rows}"
        )


def _verify(task: FileTask, path: str, expected_rows: int, matcher: _Matcher) -> None:
    _check(path, _load(FileTask(task.kind, path), ids_only=True), task, expected_rows, matcher)


def _verify_bytes(task: FileTask, payload: bytes, expected_rows: int, matcher: _Matcher) -> None:
    if task.kind == "deadletter":
        data: pa.Table | list[bytes] = [line for line in payload.split(b"\n") if line.strip()]
    else:
        data = _read_columns(pq.ParquetFile(io.BytesIO(payload)), _columns_for(task.kind))
    _check(f"{task.path} (new content)", data, task, expected_rows, matcher)


def _check(label: str, data, task: FileTask, expected_rows: int, matcher: _Matcher) -> None:
    mask, _ = _mask(task, data, matcher)
    if len(mask) != expected_rows or mask.any():
        raise PurgeFileError(
            f"{label}: verification failed ({len(mask)} records, expected {expected_rows}; "
            f"{int(mask.sum())} still match)"
        )


def _parquet_rows(path: str) -> int:
    if "://" not in path:
        return pq.read_metadata(path).num_rows
    with FileSystems.open(path) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def _check_renamed(path: str, size: int, expected_rows: int) -> None:
    try:
        if "://" not in path:  # a local path is not a pattern (it may hold "[" or "*")
            stored = os.path.getsize(path)
        else:
            (match,) = FileSystems.match([path])
            stored = match.metadata_list[0].size_in_bytes if match.metadata_list else -1
        rows = _parquet_rows(path) if stored == size else -1
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise PurgeFileError(f"{path}: not readable after the replace ({exc})") from exc
    if stored != size or rows != expected_rows:
        raise PurgeFileError(
            f"{path}: after the replace holds {stored} bytes and {rows} records, "
            f"not the verified {size} bytes and {expected_rows} records"
        )


STALE_TEMPORARY_S = 300  # a temporary this old has no live writer: write_atomically renames within seconds


def _is_stale_temporary(path: str) -> bool:
    if not path.rsplit("/", 1)[-1].startswith(".tmp-"):
        return False
    try:
        (match,) = FileSystems.match([path])
        updated = match.metadata_list[0].last_updated_in_seconds
    except (OSError, ValueError, IndexError):
        return False
    return bool(updated) and time.time() - updated > STALE_TEMPORARY_S


def rewrite_file(
    task: FileTask,
    id_requests: Mapping[str, Sequence[str]],
    journal_dir: str,
    allowed: bool = True,
    blocked_reason: str = "",
    purge_versions: bool = True,
    faults: FaultPoints | None = None,
    scanned: ScannedFile | None = None,
) -> FileResult:
    """Remove the subjects' records from one file, verified; see the module docstring for the steps.

    ``faults`` (tests): called at ``before_replace`` and ``after_replace``; default the installed ones.
    ``scanned``: the file as ``scan_and_keep`` read it, used if the file is unchanged since.
    """
    matcher = _Matcher(id_requests)
    at = iso_ms(now_ms())
    if not FileSystems.exists(task.path):
        # Gone (e.g. compacted or already emptied and deleted): nothing of anyone remains there.
        versions = _purge_versions(task.path) if purge_versions else 0  # a crash may have left them
        earlier = read_journal(journal_dir, task.path)
        return FileResult(task, "clean", 0, 0, earlier, True, at, "file no longer exists", versions)
    try:
        read_version = _s3_etag(task.path)  # before the read: a newer write fails the replace, never the reverse
        stored: _StoredParquet | None = None
        reused = scanned is not None and scanned.unchanged(task)
        if reused:
            (data, stored), bucket = (scanned.ids, scanned.stored), None
        elif task.kind == "archive":
            (data, stored), bucket = _read_archive_file(task), None  # identifier columns; the rest if needed
        else:
            data, bucket = _read_for_rewrite(task)
    except PurgeFileError as exc:
        if _is_stale_temporary(task.path):
            # A writer killed mid-write left it; it was never published and cannot be read: delete it.
            FileSystems.delete([task.path])
            detail = f"unreadable temporary file of a crashed writer (older than {STALE_TEMPORARY_S} s) deleted"
            return FileResult(task, "purged", 0, 0, read_journal(journal_dir, task.path), True, at, detail)
        return FileResult(task, "error", 0, 0, {}, False, at, str(exc))
    mask, per_request = (scanned.mask, dict(scanned.per_request)) if reused else _mask(task, data, matcher)
    matched_by = dict(matcher.matched_by)
    total, removing = len(mask), int(mask.sum())
    earlier = read_journal(journal_dir, task.path)
    if removing == 0:
        # Nothing (more) to remove; older versions may still hold what an earlier, crashed run removed.
        versions = _purge_versions(task.path) if purge_versions else 0
        return FileResult(task, "clean", total, total, earlier, True, at, versions_deleted=versions)
    if not allowed:
        return FileResult(task, "blocked", total, total, {}, False, at, blocked_reason)
    merged = {r: max(earlier.get(r, 0), per_request.get(r, 0)) for r in {*earlier, *per_request}}
    _write_journal(journal_dir, task, merged)
    keep = ~mask
    if isinstance(data, list):
        kept: pa.Table | list[bytes] = [line for line, k in zip(data, keep) if k]
    elif stored is None:
        kept = data.filter(pa.array(keep))
    remaining = total - removing
    versions = 0
    fault_points.reached("before_replace", faults)
    try:
        check_held()  # another purge took the archive over: this copy may predate its rewrite
    except LockLost as exc:
        raise PurgeFileError(f"{task.path}: not replaced: {exc}") from exc
    if remaining == 0:
        FileSystems.delete([task.path])
    else:
        payload = _encode_archive(task, stored, data, keep) if stored is not None else _encode(task, kept, bucket)
        if is_object_store(task.path):  # one PUT, no temporary object: check the new content first
            _verify_bytes(task, payload, remaining, matcher)
        if read_version is not None:
            _put_if_unchanged(task.path, payload, read_version)
        else:
            write_bytes_atomically(task.path, payload, lambda tmp: _verify(task, tmp, remaining, matcher))
    fault_points.reached("after_replace", faults)
    if purge_versions:
        versions += _purge_versions(task.path)
    if remaining and (is_object_store(task.path) or task.kind == "deadletter"):
        _verify(task, task.path, remaining, matcher)  # what the PUT stored (or a dead-letter file), read back
    elif remaining:
        # Renamed onto the path after its own re-scan (``_verify`` of the temporary): the final file
        # is checked to be those bytes (size, footer row count) rather than scanned a second time; the
        # run's independent verification reads every stored file again after all rewrites.
        _check_renamed(task.path, len(payload), remaining)
    elif FileSystems.exists(task.path):
        raise PurgeFileError(f"{task.path}: still exists after deleting it")
    return FileResult(
        task, "purged", total, remaining, merged, True, at, versions_deleted=versions, matched_by=matched_by
    )


def _s3_etag(path: str) -> str | None:
    """An s3 object's ETag now (None for other schemes): what its rewrite may replace."""
    if not path.startswith("s3://"):
        return None
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3_path(path)
    try:
        return s3_client().head_object(Bucket=bucket, Key=key)["ETag"]
    except (ClientError, BotoCoreError) as exc:
        raise PurgeFileError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from exc


def _put_if_unchanged(path: str, payload: bytes, read_version: str) -> None:
    """One PUT, only if the object is still the version the rewrite read (``If-Match``): a copy
    read before another writer's change (a second purge) never replaces that change."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3_path(path)
    try:
        s3_client().put_object(Bucket=bucket, Key=key, Body=payload, IfMatch=read_version)
    except ClientError as exc:
        code = s3_error_code(exc)
        if code in (*CONDITION_FAILED, "NoSuchKey"):
            raise PurgeFileError(f"{path}: changed since this purge read it (another writer): not replaced") from exc
        raise PurgeFileError(f"{path}: not replaced ({code}: {exc})") from exc
    except BotoCoreError as exc:
        raise PurgeFileError(f"{path}: not replaced ({type(exc).__name__}: {exc})") from exc


def _purge_versions(path: str) -> int:
    """Older object versions would keep the erased records in a versioned bucket: delete them."""
    if not is_object_store(path):
        return 0
    from beam_rtbf.sinks.versions import OldVersionsError, purge_noncurrent_versions

    try:
        return purge_noncurrent_versions(path)
    except OldVersionsError as exc:  # the current object is clean, but the request stays open
        raise PurgeFileError(str(exc)) from exc


def rewrite_or_error(
    task: FileTask,
    id_requests: Mapping[str, Sequence[str]],
    journal_dir: str,
    allowed: bool,
    reason: str,
    purge_versions: bool,
    scanned: ScannedFile | None = None,
) -> FileResult:
    """``rewrite_file``, with a failed verification as the file's error result (the original stays)."""
    try:
        return rewrite_file(task, id_requests, journal_dir, allowed, reason, purge_versions, scanned=scanned)
    except PurgeFileError as exc:
        return FileResult(task, "error", 0, 0, {}, False, iso_ms(now_ms()), str(exc))
