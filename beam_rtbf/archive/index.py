"""Read the archive's subject index: which files hold an identifier, how many records, when.

Manifests use it to name the partitions a request touches; the purge uses it to
find the data files to rewrite and the index files that must lose the subject's
rows themselves (the index is personal data too).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_rtbf.archive.write import INDEX_DIR, INDEX_SCHEMA
from beam_rtbf.sinks.files import join

__all__ = ["index_files", "lookup_archive_index", "archive_data_files", "read_parquet", "resolve", "relative_to"]


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


def lookup_archive_index(archive_dir: str, subject_ids: Sequence[str], with_index_file: bool = False) -> pa.Table:
    """Index rows for these identifiers; with ``with_index_file`` also the index file each row is in."""
    ids = pa.array(sorted(set(subject_ids)), pa.string())
    schema = INDEX_SCHEMA.append(pa.field("index_file", pa.string())) if with_index_file else INDEX_SCHEMA
    tables = []
    for path in index_files(archive_dir):
        table = read_parquet(path)
        found = table.filter(pc.is_in(table.column("user_id"), value_set=ids))
        if found.num_rows:
            found = found.select(INDEX_SCHEMA.names)
            if with_index_file:
                found = found.append_column("index_file", pa.array([path] * found.num_rows, pa.string()))
            tables.append(found)
    return pa.concat_tables(tables) if tables else schema.empty_table()
