"""Remove rows from a Parquet file by re-encoding only the row groups that held them.

A purge removes one subject's few rows from an hourly archive file of tens of thousands.
Decoding and re-encoding the whole file was most of a one-request purge's time; here only
the row groups holding the rows are re-encoded, and every other byte of the file stays
where it was, as parquet-java's ``ParquetRewriter`` and other engines' row-group copies
keep untouched column chunks as they are. pyarrow cannot copy a column chunk, so the new
file is assembled here:

- the original bytes, with each touched row group's byte range overwritten by the same row
  group re-encoded without the rows (pyarrow writes it, in a file of its own, with the
  archive's settings) and the rest of the range zeroed: readers find column chunks by the
  footer's offsets, and a gap between row groups is as parquet-java's block padding leaves;
  nothing of the removed rows remains in the file;
- the original footer, in which only the touched row groups' entries (their page offsets
  moved to where the new bytes are, their row counts and statistics pyarrow's), the file's
  row count and the entries the caller gives (the identifier filter of the rows that remain)
  change: the untouched row groups' entries are copied as bytes.

Whenever that cannot be done plainly ``splice_out`` returns None and the caller re-encodes
the whole file, as before: more than half the rows in touched groups, every row of a group
removed, page indexes, Bloom filters or encryption in the footer, column chunks not
back to back, another schema from pyarrow. The caller verifies the result as any rewrite.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from beam_rtbf.archive.thrift_compact import (
    BINARY,
    I16,
    I32,
    I64,
    LIST,
    STRUCT,
    Seq,
    Struct,
    ThriftError,
    encode_value,
    field_spans,
    list_element_spans,
    read_struct,
    write_struct,
)

__all__ = ["splice_out", "SpliceError"]

MAGIC = b"PAR1"

# parquet.thrift field ids used here
_FMD_SCHEMA, _FMD_NUM_ROWS, _FMD_ROW_GROUPS, _FMD_KEY_VALUE, _FMD_ENCRYPTION = 2, 3, 4, 5, 8
_RG_COLUMNS, _RG_NUM_ROWS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 3, 5, 7
_CC_FILE_OFFSET, _CC_META = 2, 3
_CC_NOT_COPYABLE = (1, 4, 5, 6, 7, 8, 9)  # file path, page indexes, encryption: kept apart from the chunk
_CM_TOTAL_COMPRESSED, _CM_DATA_PAGE, _CM_INDEX_PAGE, _CM_DICTIONARY_PAGE = 7, 9, 10, 11
_CM_NOT_COPYABLE = (14, 15)  # a Bloom filter kept apart from the chunk (it would still answer for the rows)
_KV_KEY, _KV_VALUE = 1, 2


class SpliceError(ValueError):
    """The file's footer does not describe the file (a damaged or foreign file)."""


class _Footer:
    """A file's footer: where it starts, its top-level fields' spans and its row groups' spans."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 12 or data[:4] != MAGIC or data[-4:] != MAGIC:
            raise SpliceError("not a Parquet file (magic bytes)")
        (length,) = struct.unpack("<I", data[-8:-4])
        self.start = len(data) - 8 - length
        if self.start < 4:
            raise SpliceError("footer length beyond the file")
        self.data = data[self.start : -8]
        try:
            self.fields = field_spans(self.data)
            kind, start, _ = self.fields[_FMD_ROW_GROUPS]
            element, self.groups = list_element_spans(self.data, start)
        except (ThriftError, KeyError) as exc:
            raise SpliceError(f"footer unreadable: {exc}") from exc
        if kind != LIST or element != STRUCT or self.fields.get(_FMD_NUM_ROWS, (None,))[0] != I64:
            raise SpliceError("footer's row groups or row count are not as parquet.thrift has them")

    def raw(self, field_id: int) -> bytes:
        _, start, end = self.fields[field_id]
        return self.data[start:end]

    def group(self, index: int) -> Struct:
        start, _ = self.groups[index]
        try:
            return read_struct(self.data, start)[0]
        except ThriftError as exc:
            raise SpliceError(f"row group {index} unreadable: {exc}") from exc


def _int(struct_: Struct, field: int) -> int | None:
    """An integer field's value; None if absent; TypeError if stored as another type."""
    entry = struct_.fields.get(field)
    if entry is None:
        return None
    if entry[0] not in (I16, I32, I64):
        raise TypeError(f"field {field} stored as compact type {entry[0]}, not an integer")
    return entry[1]


def _chunk_start(meta: Struct) -> int:
    dictionary = _int(meta, _CM_DICTIONARY_PAGE)
    return dictionary if dictionary else _int(meta, _CM_DATA_PAGE)


def _group_range(group: Struct) -> tuple[int, int] | None:
    """The group's bytes [start, end) if its column chunks lie back to back, each copyable."""
    spans = []
    for chunk in group.get(_RG_COLUMNS).items:
        meta = chunk.get(_CC_META)
        if meta is None or any(f in chunk for f in _CC_NOT_COPYABLE) or any(f in meta for f in _CM_NOT_COPYABLE):
            return None
        if not isinstance(meta, Struct):
            raise TypeError("column chunk's metadata is not a struct")
        start = _chunk_start(meta)
        spans.append((start, start + _int(meta, _CM_TOTAL_COMPRESSED)))
    spans.sort()
    if not spans or any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
        return None
    return spans[0][0], spans[-1][1]


def _metadata_range(group: pq.RowGroupMetaData) -> tuple[int, int] | None:
    """A row group's bytes [start, end) from pyarrow's reading of the footer, if its chunks lie back to
    back and nothing of theirs is kept elsewhere in the file (page indexes, Bloom filters: a splice
    zeroes what lies between groups and would leave a re-encoded group's old ones behind)."""
    spans = []
    for j in range(group.num_columns):
        column = group.column(j)
        if column.has_offset_index or column.has_column_index or column.bloom_filter_offset or column.file_path:
            return None
        start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
        spans.append((start, start + column.total_compressed_size))
    spans.sort()
    if not spans or any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
        return None
    return spans[0][0], spans[-1][1]


def _moved(group: Struct, delta: int, ordinal: int) -> Struct:
    """The group's offsets moved by ``delta`` (a zero offset means "not set" and stays)."""
    for chunk in group.get(_RG_COLUMNS).items:
        if _int(chunk, _CC_FILE_OFFSET):
            chunk.set(_CC_FILE_OFFSET, _int(chunk, _CC_FILE_OFFSET) + delta)
        meta = chunk.get(_CC_META)
        for field in (_CM_DATA_PAGE, _CM_INDEX_PAGE, _CM_DICTIONARY_PAGE):
            if _int(meta, field):
                meta.set(field, _int(meta, field) + delta)
    if _int(group, _RG_FILE_OFFSET):
        group.set(_RG_FILE_OFFSET, _int(group, _RG_FILE_OFFSET) + delta)
    if _RG_ORDINAL in group:
        group.set(_RG_ORDINAL, ordinal)
    return group


def _key_values(footer: _Footer, entries: Mapping[bytes, bytes]) -> bytes:
    """The footer's key-value list with ``entries`` set (replaced in place, or appended)."""
    pending = dict(entries)
    items: list[Struct] = []
    if _FMD_KEY_VALUE in footer.fields:
        _, start, _ = footer.fields[_FMD_KEY_VALUE]
        for begin, _end in list_element_spans(footer.data, start)[1]:
            items.append(read_struct(footer.data, begin)[0])
    for item in items:
        key = item.get(_KV_KEY)
        if key in pending:
            item.fields[_KV_VALUE] = (BINARY, pending.pop(key))
    items += [Struct({_KV_KEY: (BINARY, k), _KV_VALUE: (BINARY, v)}) for k, v in pending.items()]
    return encode_value(LIST, Seq(STRUCT, items))


def splice_out(
    original: bytes,
    remove: np.ndarray,
    encode: Callable[[Sequence[pa.Table]], bytes],
    entries_for: Callable[[int, list[int]], Mapping[bytes, bytes]],
) -> tuple[bytes, list[int]] | None:
    """``original`` without the rows where ``remove`` is True, and the row groups re-encoded; None
    where only a whole rewrite can do.

    ``encode(tables)``: a Parquet file of these tables, one row group each, written as the
    original was (same schema and settings). ``entries_for(rows, row_group_rows)``: the footer
    entries of the new file (they replace the original's entries of the same keys).

    SpliceError: the footer is not as parquet.thrift describes it (a field of another type than
    the spec's, which pyarrow's reader skips, counts that do not add up); the caller re-encodes
    the whole file. Errors reading the rows themselves are pyarrow's own (ArrowException, OSError).
    """
    try:
        return _splice_out(original, remove, encode, entries_for)
    except (ThriftError, TypeError, AttributeError, KeyError) as exc:
        raise SpliceError(f"footer not as parquet.thrift has it ({type(exc).__name__}: {exc})") from exc


def _splice_out(
    original: bytes,
    remove: np.ndarray,
    encode: Callable[[Sequence[pa.Table]], bytes],
    entries_for: Callable[[int, list[int]], Mapping[bytes, bytes]],
) -> tuple[bytes, list[int]] | None:
    try:
        parquet = pq.ParquetFile(pa.BufferReader(original))
    except (pa.ArrowException, OSError) as exc:
        raise SpliceError(f"not a readable Parquet file ({exc})") from exc
    counts = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
    if sum(counts) != len(remove):
        raise SpliceError(f"footer counts {sum(counts)} rows in its row groups, the file read {len(remove)}")
    bounds = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).tolist()
    touched = [i for i in range(len(counts)) if remove[bounds[i] : bounds[i + 1]].any()]
    keeps = [~remove[bounds[i] : bounds[i + 1]] for i in touched]
    kept_counts = [int(k.sum()) for k in keeps]
    if not touched or 0 in kept_counts or 2 * sum(counts[i] for i in touched) > sum(counts):
        # Decided before the footer is walked. Re-encoding more than half the rows (a batch purge
        # touches most groups), a whole rewrite costs as little and leaves no padding.
        return None
    footer = _Footer(original)
    if _FMD_ENCRYPTION in footer.fields or len(footer.groups) != len(counts):
        return None
    if footer.fields.get(_FMD_KEY_VALUE, (None,))[0] != LIST:  # the entries are replaced in this list
        return None
    originals = [footer.group(i) for i in touched]
    if any(_int(group, _RG_NUM_ROWS) != counts[i] for group, i in zip(originals, touched)):
        raise SpliceError("footer row counts differ from pyarrow's reading of them")
    ranges = [_metadata_range(parquet.metadata.row_group(i)) for i in range(len(counts))]
    if any(r is None for r in ranges) or any(_group_range(group) is None for group in originals):
        return None
    if (
        ranges[0][0] < len(MAGIC)
        or ranges[-1][1] > footer.start
        or any(a[1] > b[0] for a, b in zip(ranges, ranges[1:]))
    ):
        return None
    rows = parquet.read_row_groups(touched, use_threads=False)
    kept = rows.filter(pa.array(np.concatenate(keeps))).replace_schema_metadata(None)
    offsets = np.concatenate([[0], np.cumsum(kept_counts)]).tolist()
    fresh = encode([kept.slice(offsets[n], kept_counts[n]) for n in range(len(touched))])
    fresh_footer = _Footer(fresh)
    if fresh_footer.raw(_FMD_SCHEMA) != footer.raw(_FMD_SCHEMA) or len(fresh_footer.groups) != len(touched):
        return None
    reencoded: dict[int, tuple[Struct, tuple[int, int]]] = {}
    for n, i in enumerate(touched):
        group = fresh_footer.group(n)
        span = _group_range(group)
        if span is None or span[1] > fresh_footer.start or _int(group, _RG_NUM_ROWS) != kept_counts[n]:
            return None
        reencoded[i] = (group, span)
        counts[i] = kept_counts[n]
    # The row groups in their order: a re-encoded group where the old one was (zero-padded to its
    # size when it fits, so nothing after it moves); the others copied, moved only if one before
    # them grew or shrank; what lay between groups (padding) zeroed.
    out = bytearray(MAGIC)
    entries: dict[int, bytes] = {}
    delta = 0
    for i, (start, end) in enumerate(ranges):
        out += bytes(start + delta - len(out))
        if i in reencoded:
            group, (fresh_start, fresh_end) = reencoded[i]
            entries[i] = write_struct(_moved(group, len(out) - fresh_start, i))
            out += fresh[fresh_start:fresh_end]
            if delta == 0 and fresh_end - fresh_start <= end - start:
                out += bytes(end - start - (fresh_end - fresh_start))
            else:
                delta += (fresh_end - fresh_start) - (end - start)
            continue
        if delta:
            group = footer.group(i)
            if _group_range(group) is None:
                return None
            entries[i] = write_struct(_moved(group, delta, i))
        out += original[start:end]
    tail = original[ranges[-1][1] : footer.start]  # page indexes or filters of untouched groups, if any
    if tail and delta:
        return None  # their offsets would have to move too
    out += tail
    # The new footer: the original's bytes, with the touched groups, the row count and the entries replaced.
    edits = [(footer.groups[i][0], footer.groups[i][1], body) for i, body in entries.items()]
    _, rows_start, rows_end = footer.fields[_FMD_NUM_ROWS]
    edits.append((rows_start, rows_end, encode_value(I64, sum(counts))))
    _, kv_start, kv_end = footer.fields[_FMD_KEY_VALUE]
    edits.append((kv_start, kv_end, _key_values(footer, entries_for(sum(counts), counts))))
    new_footer = bytearray()
    at = 0
    for start, end, body in sorted(edits):
        new_footer += footer.data[at:start] + body
        at = end
    new_footer += footer.data[at:]
    out += new_footer + struct.pack("<I", len(new_footer)) + MAGIC
    return bytes(out), touched
