"""Read the archive's subject index: which files hold an identifier, how many records, when.

Manifests use it to name the partitions a request touches; the purge uses it to
find the data files to rewrite and the index files that must lose the subject's
rows themselves (the index is personal data too).

A lookup reads each index file's footer (``index_footer.py``), skips files of other
hash buckets, and reads only the row groups whose hash range holds one of the
identifiers; index files without that footer are read whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_rtbf.archive.idfilter import string_hashes
from beam_rtbf.archive.index_footer import bucket_of, read_index_footer
from beam_rtbf.archive.write import INDEX_DIR, INDEX_SCHEMA
from beam_rtbf.identifiers import canonical_array
from beam_rtbf.sinks.files import join

__all__ = [
    "index_files",
    "lookup_archive_index",
    "archive_data_files",
    "read_parquet",
    "resolve",
    "relative_to",
    "IndexLookup",
    "lookup_index_file",
    "lookup_hashes",
]


def resolve(root: str, stored: str) -> str:
    """A stored path (relative to ``root``) as a full path; full URIs and absolute paths stay as they are."""
    if "://" in stored or stored.startswith("/"):
        return stored
    return join(root, stored)


def relative_to(root: str, path: str) -> str:
    """``path`` relative to ``root`` when it lies under it, else ``path`` itself (a full URI or path)."""
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def read_parquet(path: str, columns: Sequence[str] | None = None) -> pa.Table:
    """A Parquet file from any Beam filesystem (local, s3://, gs://)."""
    with FileSystems.open(path) as handle:
        return pq.read_table(handle, columns=list(columns) if columns else None)


def _match(pattern: str) -> list[str]:
    return sorted(m.path for result in FileSystems.match([pattern]) for m in result.metadata_list)


def index_files(archive_dir: str) -> list[str]:
    return [p for p in _match(join(archive_dir, INDEX_DIR, "*.parquet")) if "/.tmp-" not in p]


def archive_data_files(archive_dir: str) -> list[str]:
    """Every archive partition file (not the index, not temporaries), published or not.

    Files a bounded run staged under ``_staging/<run_id>/`` (a dead run's leftovers until
    the next run removes them) are included: a full scan must see them. The index lists
    published files only.
    """
    return [p for p in _match(join(archive_dir, "**", "*.parquet")) if f"/{INDEX_DIR}/" not in p and "/.tmp-" not in p]


@dataclasses.dataclass(frozen=True)
class IndexLookup:
    """One index file's answer: the rows of the identifiers, the archive files it names, its records."""

    rows: pa.Table  # the requested columns, rows whose user_id is one of the identifiers
    paths: frozenset[str]  # archive files (as stored) its rows name
    user_id_records: int  # records its user_id rows count
    row_groups_read: int
    row_groups: int


def lookup_hashes(ids: Sequence[str]) -> np.ndarray:
    """What ``lookup_index_file`` needs of ``ids`` (in order): the hashes of their canonical forms,
    which choose the index bucket (the writer buckets stored values by their canonical form)."""
    return string_hashes(canonical_array(pa.array(list(ids), pa.string())))


def lookup_index_file(path: str, ids: Sequence[str], id_hashes: np.ndarray, columns: Sequence[str]) -> IndexLookup:
    """Rows of ``ids`` in one index file (``id_hashes``: ``lookup_hashes(ids)``).

    Reads the footer, then only the row groups whose hash range holds an identifier of this
    file's bucket; an index file without the footer is read whole.
    """
    wanted = list(dict.fromkeys(["user_id", *columns]))
    with FileSystems.open(path) as handle:
        parquet = pq.ParquetFile(handle)
        metadata = parquet.metadata
        footer = read_index_footer(metadata)
        if footer is None:
            table = parquet.read(columns=list(dict.fromkeys([*wanted, "id_kind", "path", "records"])))
            is_user = pc.equal(table.column("id_kind"), "user_id")
            records = pc.sum(pc.if_else(is_user, table.column("records"), 0)).as_py() or 0
            paths = frozenset(pc.unique(table.column("path")).drop_null().to_pylist())
            groups = list(range(metadata.num_row_groups))
        else:
            mine = id_hashes[bucket_of(id_hashes, footer.buckets) == footer.bucket]
            groups = footer.groups_for(mine, metadata.num_row_groups) if len(mine) else []
            table = parquet.read_row_groups(groups, columns=wanted) if groups else None
            records, paths = footer.user_id_records, frozenset(footer.paths)
    if table is None:
        found = pa.schema([INDEX_SCHEMA.field(c) for c in wanted]).empty_table()
    else:
        value_set = pa.array(sorted(set(ids)), pa.string())
        found = table.filter(pc.is_in(table.column("user_id"), value_set=value_set)).select(wanted)
    return IndexLookup(found, paths, records, len(groups), metadata.num_row_groups)


def lookup_archive_index(archive_dir: str, subject_ids: Sequence[str], with_index_file: bool = False) -> pa.Table:
    """Index rows for these identifiers; with ``with_index_file`` also the index file each row is in."""
    ids = sorted(set(subject_ids))
    hashes = lookup_hashes(ids)
    schema = INDEX_SCHEMA.append(pa.field("index_file", pa.string())) if with_index_file else INDEX_SCHEMA
    tables = []
    for path in index_files(archive_dir):
        found = lookup_index_file(path, ids, hashes, INDEX_SCHEMA.names).rows
        if found.num_rows:
            found = found.select(INDEX_SCHEMA.names)
            if with_index_file:
                found = found.append_column("index_file", pa.array([path] * found.num_rows, pa.string()))
            tables.append(found)
    return pa.concat_tables(tables) if tables else schema.empty_table()
