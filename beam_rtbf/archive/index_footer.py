"""What an index file says about itself in its footer, so a lookup need not read it whole.

The archive writes its subject index in hash buckets (``bucket_of``): the rows of one
flush are split by the hash of the identifier's canonical form, each bucket sorted by
identifier and written in small row groups, so the row groups' min/max statistics
narrow a lookup to a few thousand rows. Each index file's footer holds:

- ``bucket`` / ``buckets``: which identifiers it can hold (an identifier whose bucket
  differs is in another file);
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

    def __init__(self, bucket: int, buckets: int, paths: list[str], user_id_records: int) -> None:
        self.bucket = bucket
        self.buckets = buckets
        self.paths = paths
        self.user_id_records = user_id_records


def index_footer_entry(rows: pa.Table, bucket: int, buckets: int) -> dict[bytes, bytes]:
    """The footer entry of an index file holding ``rows`` (INDEX_SCHEMA) of ``bucket``."""
    is_user = pc.equal(rows.column("id_kind"), "user_id")
    body = {
        "version": _VERSION,
        "canonical_form": CANONICAL_FORM,
        "bucket": bucket,
        "buckets": buckets,
        "paths": sorted(pc.unique(rows.column("path")).drop_null().to_pylist()),
        "user_id_records": pc.sum(pc.if_else(is_user, rows.column("records"), 0)).as_py() or 0,
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
        return IndexFooter(bucket, buckets, [str(p) for p in body["paths"]], int(body["user_id_records"]))
    except (ValueError, KeyError, TypeError):
        return None
