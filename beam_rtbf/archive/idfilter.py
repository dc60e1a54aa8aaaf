"""Identifier filters in Parquet footers: how a file written by the archive says who is *not* in it.

The purge's verification must cover every file under the archive root, yet one
request's subject is in a few of hundreds of files. Each Parquet file the archive
(or the purge's rewrite) writes carries in its footer a Bloom filter over every
distinct value of its identifier columns (``user_id``, ``email``, ``device_id``;
``user_id`` in index files), keyed as the verification's own candidate rule keys
them (``verify.canonical_candidates``): ASCII-lower-cased and trimmed. A Bloom
filter has no false negatives: if none of a request's identifiers is in it, the
file holds none of its records, and the file's columns need not be read.

For printable ASCII text that key is the canonical identifier lower-cased, so the
proof does not depend on the vectorised canonical form (``canonical_array``) being
right; a file holding any identifier value outside printable ASCII gets a filter
marked so, which proves nothing (the verification reads such files, as its rule
sends those values to ``canonical_id`` anyway).

The filter is bound to the file it describes and used only when all of these hold
(``read_filter``); otherwise the file's identifier columns are read, as before:

- it is in the Parquet footer's key-value metadata, written after the row groups
  (``ParquetWriter.add_key_value_metadata``), and not in the Arrow schema the file
  stores (``ARROW:schema``): ``write_parquet`` drops the metadata of the table it is
  given. Spark, DuckDB and ``pq.read_table`` do not carry footer entries into a table,
  but ``pq.ParquetFile(...).read()`` does, and pyarrow writes a table's metadata both
  into the footer and into the stored Arrow schema: a filter found in the stored
  Arrow schema was copied by a read and a write of the table, whose rows may have
  changed, and proves nothing;
- its row count and per-row-group row counts are the footer's own;
- it covers every identifier column the file has;
- every value it covers was printable ASCII;
- it was built under the canonical identifier form of this code
  (``identifiers.CANONICAL_FORM``, which names the Unicode version too).

Hashing is vectorised (numpy over the Arrow string buffers), so a filter costs a
few passes over the distinct identifier values at write time.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_rtbf.identifiers import CANONICAL_FORM

__all__ = [
    "FOOTER_KEY",
    "BITS_KEY",
    "IdFilter",
    "string_hashes",
    "filter_keys",
    "query_hashes",
    "filter_entry",
    "read_filter",
    "write_parquet",
    "encode_row_groups",
]

FOOTER_KEY = b"rtbf.idfilter"  # what the filter covers and the rows it is bound to (JSON)
BITS_KEY = b"rtbf.idfilter.bits"  # the Bloom filter's bits, base64 (footer values must stay text)
FORMAT_VERSION = 1
BITS_PER_ID = 10  # with 7 probes: ~0.8% false positives (a false positive only means "read the file")
PROBES = 7
_FEW_HASHES = 8  # up to this many hashes a check is plain Python (``IdFilter._may_contain_few``)
_MAX_ROW_GROUP = 1 << 20  # Arrow's own cap on a row group: the row counts the footer binds must be the writer's

_MULTIPLIER = np.uint64(0x100000001B3)
_LENGTH_MIX = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


_HORNER_MAX_BYTES = 64  # longer values (rare) are hashed by prefix sums instead of one pass per byte


def string_hashes(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each value's UTF-8 bytes (nulls hash as ""), vectorised over the Arrow buffers.

    A polynomial over the bytes (wrapping uint64 arithmetic), mixed with the length and
    finished with splitmix64. Deterministic across processes and machines: files store it.
    Values of one length are hashed together, one numpy pass per byte position.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if values.type != pa.large_string():
        values = values.cast(pa.large_string())
    n = len(values)
    if n == 0:
        return np.zeros(0, np.uint64)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset : values.offset + n + 1]
    buffer = values.buffers()[2]
    data = np.frombuffer(buffer, dtype=np.uint8) if buffer is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], offsets[1:] - offsets[:-1]
    if values.null_count:  # a null's bytes (if any) are not its value
        lengths = np.where(values.is_valid().to_numpy(zero_copy_only=False), lengths, 0)
    h = np.zeros(n, np.uint64)
    order = np.argsort(lengths, kind="stable")
    by_length = lengths[order]
    cuts = (np.flatnonzero(np.diff(by_length)) + 1).tolist()
    for lo, hi in zip([0, *cuts], [*cuts, n]):
        length, rows = int(by_length[lo]), order[lo:hi]
        if length == 0:
            continue
        if length > _HORNER_MAX_BYTES:
            h[rows] = _long_hashes(data, starts[rows], lengths[rows])
            continue
        block = data[starts[rows][:, None] + np.arange(length)]
        acc = np.zeros(len(rows), np.uint64)
        for j in range(length):
            acc *= _MULTIPLIER
            acc += block[:, j].astype(np.uint64) + np.uint64(1)
        h[rows] = acc
    return _splitmix64(h ^ (lengths.astype(np.uint64) * _LENGTH_MIX))


def _long_hashes(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The same polynomial as the per-position loop, by prefix sums of byte * multiplier**(distance to end)."""
    longest = int(lengths.max())
    powers = np.ones(longest, np.uint64)
    powers[1:] = np.cumprod(np.full(longest - 1, _MULTIPLIER, np.uint64), dtype=np.uint64)
    owner = np.repeat(np.arange(len(starts)), lengths)
    firsts = np.cumsum(lengths) - lengths
    within = np.arange(int(lengths.sum())) - firsts[owner]
    picked = data[starts[owner] + within].astype(np.uint64) + np.uint64(1)
    terms = picked * powers[lengths[owner] - 1 - within]
    sums = np.zeros(len(terms) + 1, np.uint64)
    np.cumsum(terms, dtype=np.uint64, out=sums[1:])
    return sums[firsts + lengths] - sums[firsts]


class IdFilter:
    """A Bloom filter over canonical identifiers: ``may_contain`` is never False for a member.

    Read from a footer it stays base64 text: a check of a few identifiers decodes only the
    bytes its probes fall in (a footer is read for every file of a verification).
    """

    def __init__(self, size_bits: int, probes: int, bits: np.ndarray | None = None, encoded: bytes = b"") -> None:
        self.size_bits = size_bits
        self.probes = probes
        self._bits = bits  # uint8, little-endian bit order; decoded from ``encoded`` when first needed
        self._encoded = encoded

    def _positions(self, hashes: np.ndarray) -> np.ndarray:
        """Probe i of a hash is (h1 + i * h2) mod size_bits, built by adding (h2 mod size) and
        subtracting size once where it passes: one modulo per hash instead of one per probe."""
        size = np.int64(self.size_bits)
        h1 = (hashes & np.uint64(0xFFFFFFFF)).astype(np.int64)
        h2 = ((hashes >> np.uint64(32)) | np.uint64(1)).astype(np.int64)
        position, step = h1 % size, h2 % size
        out = np.empty((len(hashes), self.probes), np.int64)
        out[:, 0] = position
        for probe in range(1, self.probes):
            position = position + step
            position -= size * (position >= size)
            out[:, probe] = position
        return out

    @classmethod
    def of_hashes(cls, hashes: np.ndarray) -> IdFilter:
        size_bits = max(64, -(-len(hashes) * BITS_PER_ID // 64) * 64)
        positions = cls(size_bits, PROBES)._positions(hashes).ravel()
        bits = np.zeros(size_bits, bool)
        bits[positions] = True
        return cls(size_bits, PROBES, np.packbits(bits, bitorder="little"))

    @property
    def nbytes(self) -> int:
        """Memory held: the footer's text and, once decoded, the bits."""
        return len(self._encoded) + (self._bits.nbytes if self._bits is not None else 0)

    @property
    def bits(self) -> np.ndarray:
        """The bits; base64 text with any character outside the alphabet is refused (``binascii.Error``,
        a ValueError: the checks then prove nothing), never read leniently as other bits."""
        if self._bits is None:
            self._bits = np.frombuffer(binascii.a2b_base64(self._encoded, strict_mode=True), np.uint8)
        return self._bits

    def _may_contain_few(self, hashes: np.ndarray) -> np.ndarray:
        """``may_contain`` for a request's few identifiers, in plain Python: a verification asks it
        of every file, where numpy's per-call cost was ten times the work. Stops at the first probe
        that finds its bit clear."""
        size, bits, encoded = self.size_bits, self._bits, self._encoded
        found = []
        try:
            for value in hashes.tolist():
                h1, h2 = value & 0xFFFFFFFF, (value >> 32) | 1
                for probe in range(self.probes):
                    position = (h1 + probe * h2) % size
                    index = position >> 3
                    if bits is not None:
                        byte = int(bits[index])
                    else:  # base64: 3 bytes per 4 characters; only the group holding the byte is decoded
                        group = encoded[4 * (index // 3) : 4 * (index // 3) + 4]
                        byte = binascii.a2b_base64(group, strict_mode=True)[index % 3]
                    if not (byte >> (position & 7)) & 1:
                        found.append(False)
                        break
                else:
                    found.append(True)
        except (ValueError, IndexError):  # damaged bits: nothing is proven absent
            return np.ones(len(hashes), bool)
        return np.array(found, bool)

    def _bytes_at(self, indexes: np.ndarray) -> np.ndarray:
        if self._bits is not None or len(indexes) * 64 > self.size_bits // 8:
            return self.bits[indexes]
        groups = indexes // 3  # base64: 3 bytes per 4 characters
        decoded = {
            g: binascii.a2b_base64(self._encoded[4 * g : 4 * g + 4], strict_mode=True)
            for g in np.unique(groups).tolist()
        }
        return np.array([decoded[g][i % 3] for g, i in zip(groups.tolist(), indexes.tolist())], np.uint8)

    def may_contain(self, hashes: np.ndarray) -> np.ndarray:
        """Per hash: whether its identifier may be in the file (False: certainly not)."""
        if len(hashes) == 0:
            return np.zeros(0, bool)
        if len(hashes) <= _FEW_HASHES:
            return self._may_contain_few(hashes)
        positions = self._positions(hashes)
        try:
            stored = self._bytes_at((positions >> 3).ravel()).reshape(positions.shape)
        except (ValueError, IndexError, KeyError):  # damaged bits: nothing is proven absent
            return np.ones(len(hashes), bool)
        return (((stored >> (positions & 7).astype(np.uint8)) & 1) == 1).all(axis=1)


def filter_keys(columns: Iterable[pa.Array | pa.ChunkedArray]) -> tuple[np.ndarray, bool]:
    """(hashes of the distinct keys of the non-null values of these columns, whether every
    value is printable ASCII). The key is the value ASCII-lower-cased and trimmed.

    One distinct pass over every column's keys together (a pass per column first cost as much
    again: identifiers are mostly distinct within a file)."""
    chunks, printable = [], True
    for column in columns:
        if len(column) == 0 or column.null_count == len(column):
            continue
        values = column.drop_null() if column.null_count else column
        printable = printable and bool(pc.all(pc.ascii_is_printable(values)).as_py() in (True, None))
        keys = pc.ascii_trim_whitespace(pc.ascii_lower(values)).cast(pa.string())
        chunks += keys.chunks if isinstance(keys, pa.ChunkedArray) else [keys]
    if not chunks:
        return np.zeros(0, np.uint64), printable
    return string_hashes(pc.unique(pa.chunked_array(chunks, pa.string()))), printable


def query_hashes(canonical_ids: Iterable[str]) -> np.ndarray:
    """What to look up in filters for these canonical identifiers (their keys, as ``filter_keys``)."""
    return string_hashes(pa.array(sorted({i.lower() for i in canonical_ids}), pa.string()))


def filter_entry(
    hashes: np.ndarray, printable: bool, columns: Sequence[str], rows: int, row_groups: Sequence[int]
) -> dict[bytes, bytes]:
    """The footer entry of a file with ``rows`` rows in ``row_groups`` whose ``columns`` hold exactly
    the values with these key ``hashes`` (``filter_keys``)."""
    bloom = IdFilter.of_hashes(hashes)
    body = {
        "version": FORMAT_VERSION,
        "canonical_form": CANONICAL_FORM,
        "printable_ascii": printable,
        "columns": list(columns),
        "rows": rows,
        "row_groups": list(row_groups),
        "probes": bloom.probes,
        "size_bits": bloom.size_bits,
    }
    return {
        FOOTER_KEY: json.dumps(body, separators=(",", ":")).encode(),
        BITS_KEY: base64.b64encode(bloom.bits.tobytes()),
    }


def read_filter(metadata: pq.FileMetaData, id_columns: Sequence[str]) -> tuple[IdFilter | None, str]:
    """The file's filter if it is bound to this file and covers its ``id_columns``; else (None, why not)."""
    entries = metadata.metadata or {}
    raw = entries.get(FOOTER_KEY)
    if raw is None:
        return None, "no identifier filter in the footer"
    if _in_stored_arrow_schema(entries, FOOTER_KEY):
        return None, "identifier filter copied with the table by a tool that rewrote the file"
    try:
        body = json.loads(raw)
        if body.get("version") != FORMAT_VERSION:
            return None, f"identifier filter version {body.get('version')!r}"
        if body.get("canonical_form") != CANONICAL_FORM:
            return None, "identifier filter built with another canonical form"
        if body.get("printable_ascii") is not True:
            return None, "identifier values outside printable ASCII: the filter proves nothing"
        present = set(metadata.schema.to_arrow_schema().names) & set(id_columns)
        if not present <= set(body["columns"]):
            return None, "identifier filter does not cover every identifier column"
        groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        if body["rows"] != metadata.num_rows or list(body["row_groups"]) != groups:
            return None, "identifier filter describes other rows than the file's"
        size_bits, probes, encoded = int(body["size_bits"]), int(body["probes"]), entries.get(BITS_KEY, b"")
        if size_bits < 64 or size_bits % 64 or probes < 1 or len(encoded) != 4 * -(-size_bits // 24):
            return None, "identifier filter malformed"
        return IdFilter(size_bits, probes, encoded=encoded), ""
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"identifier filter unreadable ({type(exc).__name__})"


def _in_stored_arrow_schema(entries: Mapping[bytes, bytes], key: bytes) -> bool:
    """Whether the Arrow schema pyarrow stores in the footer carries ``key`` in its metadata
    (it does when a table read with its footer entries was written again); unreadable counts."""
    stored = entries.get(b"ARROW:schema")
    if stored is None:
        return False
    try:
        serialized = base64.b64decode(stored)
        if key not in serialized:  # metadata keys are stored verbatim: not there, not in the schema
            return False
        schema = pa.ipc.read_schema(pa.py_buffer(serialized))
    except (ValueError, binascii.Error, pa.ArrowException):
        return True
    return key in (schema.metadata or {})


def _writer(handle: IO[bytes], schema: pa.Schema, dictionary_columns: Sequence[str] | None) -> pq.ParquetWriter:
    """The archive's Parquet settings: zstd, dictionaries only for ``dictionary_columns`` (None: all)."""
    use_dictionary = True if dictionary_columns is None else [c for c in dictionary_columns if c in schema.names]
    return pq.ParquetWriter(handle, schema, compression="zstd", use_dictionary=use_dictionary)


def write_parquet(
    handle: IO[bytes],
    table: pa.Table,
    id_columns: Sequence[str],
    row_group_rows: int | None = None,
    extra: Mapping[bytes, bytes] | None = None,
    dictionary_columns: Sequence[str] | None = None,
) -> None:
    """``table`` as zstd Parquet with its identifier filter (and ``extra`` entries) in the footer.

    ``dictionary_columns``: the only columns dictionary-encoded (None: all, Arrow's default);
    a dictionary of nearly unique values (ids, times) costs a third of the write and grows the file.
    """
    # The footer is this writer's alone: a table read back carries the file's entries (the old
    # filter, whose bits still answer for identifiers a purge removed) into its schema.
    table = table.replace_schema_metadata(None)
    columns = [c for c in id_columns if c in table.column_names]
    hashes, printable = filter_keys(table.column(c) for c in columns)
    size = min(row_group_rows or _MAX_ROW_GROUP, _MAX_ROW_GROUP)
    groups = [min(size, table.num_rows - start) for start in range(0, table.num_rows, size)] or [0]
    with _writer(handle, table.schema, dictionary_columns) as writer:
        writer.write_table(table, row_group_size=size)
        entry = filter_entry(hashes, printable, columns, table.num_rows, groups)
        writer.add_key_value_metadata({**entry, **(extra or {})})


def encode_row_groups(tables: Sequence[pa.Table], dictionary_columns: Sequence[str] | None = None) -> bytes:
    """A Parquet file of these tables (one schema), one row group each, with ``write_parquet``'s
    settings and no footer entries: the row groups a splice (``splice.py``) puts into a file."""
    sink = io.BytesIO()
    schema = tables[0].schema.remove_metadata()
    with _writer(sink, schema, dictionary_columns) as writer:
        for table in tables:
            if table.num_rows > _MAX_ROW_GROUP:
                raise ValueError(f"{table.num_rows} rows do not fit one row group")
            writer.write_table(table.replace_schema_metadata(None), row_group_size=max(1, table.num_rows))
    return sink.getvalue()
