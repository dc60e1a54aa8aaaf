"""What an index file says about itself in its footer, so a lookup need not read it whole.

The archive writes its subject index in hash buckets (``bucket_of``): the rows of one
flush are split by the hash of the identifier's canonical form (``idfilter.string_hashes``),
each bucket in order of that hash, in small row groups, so a lookup reads a few thousand
rows. (Hash order, not identifier order: sorting strings costs seconds per million rows,
sorting their 64-bit hashes a few milliseconds.) Each index file's footer holds:

- ``bucket`` / ``buckets``: which identifiers it can hold (an identifier whose bucket
  differs is in another file);
- ``hash_ranges``: per row group, the lowest and highest hash in it;
- ``paths``: the archive files its rows name (what the purge plan calls indexed);
- ``user_id_records``: the records its ``user_id`` rows count (the archive's size, for
  the blast-radius guard, without reading the rows).

Index files without this footer (written before it existed) are read whole, as before.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_rtbf.identifiers import CANONICAL_FORM

__all__ = ["INDEX_FOOTER_KEY", "IndexFooter", "index_footer_entry", "read_index_footer", "bucket_of"]

INDEX_FOOTER_KEY = b"rtbf.index"
_VERSION = 1


def bucket_of(hashes: np.ndarray, buckets: int) -> np.ndarray:
    """The bucket of each identifier, from ``idfilter.string_hashes`` of its canonical form."""
    return (hashes % np.uint64(buckets)).astype(np.int64)


class IndexFooter:
    """An index file's own account of its rows (see the module docstring)."""

    def __init__(
        self,
        bucket: int,
        buckets: int,
        paths: list[str],
        user_id_records: int,
        hash_ranges: list[tuple[int, int]],
    ) -> None:
        self.bucket = bucket
        self.buckets = buckets
        self.paths = paths
        self.user_id_records = user_id_records
        self.hash_ranges = hash_ranges

    def groups_for(self, hashes: np.ndarray, row_groups: int) -> list[int]:
        """Row groups that may hold identifiers with these hashes (all, if the ranges do not fit the file)."""
        if len(self.hash_ranges) != row_groups:
            return list(range(row_groups))
        lows = np.array([lo for lo, _ in self.hash_ranges], np.uint64)
        highs = np.array([hi for _, hi in self.hash_ranges], np.uint64)
        hit = (lows[None, :] <= hashes[:, None]) & (hashes[:, None] <= highs[None, :])
        return np.flatnonzero(hit.any(axis=0)).tolist()


def index_footer_entry(
    rows: pa.Table, bucket: int, buckets: int, hash_ranges: list[tuple[int, int]]
) -> dict[bytes, bytes]:
    """The footer entry of an index file holding ``rows`` (INDEX_SCHEMA) of ``bucket``, whose
    row groups hold the hashes of ``hash_ranges``."""
    is_user = pc.equal(rows.column("id_kind"), "user_id")
    body = {
        "version": _VERSION,
        "canonical_form": CANONICAL_FORM,
        "bucket": bucket,
        "buckets": buckets,
        "paths": sorted(pc.unique(rows.column("path")).drop_null().to_pylist()),
        "user_id_records": pc.sum(pc.if_else(is_user, rows.column("records"), 0)).as_py() or 0,
        "hash_ranges": [[lo, hi] for lo, hi in hash_ranges],
    }
    return {INDEX_FOOTER_KEY: json.dumps(body, separators=(",", ":")).encode()}


def read_index_footer(metadata: pq.FileMetaData) -> IndexFooter | None:
    """The footer's account, or None (an older index file, or one written by another tool)."""
    raw = (metadata.metadata or {}).get(INDEX_FOOTER_KEY)
    if raw is None:
        return None
    try:
        body = json.loads(raw)
        if body.get("version") != _VERSION or body.get("canonical_form") != CANONICAL_FORM:
            return None
        buckets, bucket = int(body["buckets"]), int(body["bucket"])
        if not 0 <= bucket < buckets:
            return None
        ranges = [(int(lo), int(hi)) for lo, hi in body["hash_ranges"]]
        return IndexFooter(bucket, buckets, [str(p) for p in body["paths"]], int(body["user_id_records"]), ranges)
    except (ValueError, KeyError, TypeError):
        return None
