"""Splicing rows out of a Parquet file: the same rows as a whole rewrite, untouched row groups
kept byte for byte, nothing of the removed rows left in the file, and a whole rewrite (None)
wherever the layout is not plain. Also the compact-protocol codec under it."""

from __future__ import annotations

import io
import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from beam_rtbf.archive import thrift_compact as tc
from beam_rtbf.archive.idfilter import (
    BITS_KEY,
    encode_row_groups,
    filter_entry,
    filter_keys,
    query_hashes,
    read_filter,
)
from beam_rtbf.archive.splice import SpliceError, splice_out
from beam_rtbf.archive.write import DATA_DICTIONARY_COLUMNS, INDEX_ID_COLUMNS, write_data_parquet, write_index_file
from beam_rtbf.records import SESSION_SCHEMA


def _sessions(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    users = [f"user-{u}" for u in rng.integers(0, max(2, rows // 3), rows)]
    columns = {
        "user_id": users,
        "event_time_ms": np.sort(rng.integers(1_700_000_000_000, 1_700_003_600_000, rows)),
        "action": rng.choice(["view", "click", None], rows).tolist(),
        "action_type": rng.choice(["a", "b"], rows).tolist(),
        "action_detail": rng.choice(["x", "y", "z"], rows).tolist(),
        "device_type": rng.choice(["ios", "web"], rows).tolist(),
        "secs_elapsed": [None if r < 0.1 else r * 1000 for r in rng.random(rows)],
        "event_id": [f"e-{seed}-{i}" for i in range(rows)],
        "email": [f"{u}@example.org" if i % 4 else None for i, u in enumerate(users)],
        "device_id": [f"dev-{u}" for u in users],
    }
    return pa.Table.from_pydict({f.name: columns[f.name] for f in SESSION_SCHEMA}, SESSION_SCHEMA)


def _file(table: pa.Table, group_rows: int) -> bytes:
    sink = io.BytesIO()
    from beam_rtbf.archive.idfilter import write_parquet

    write_parquet(sink, table, INDEX_ID_COLUMNS, row_group_rows=group_rows, dictionary_columns=DATA_DICTIONARY_COLUMNS)
    return sink.getvalue()


def _splice(data: bytes, remove: np.ndarray, encode=None):
    table = pq.read_table(pa.BufferReader(data), columns=list(INDEX_ID_COLUMNS))
    hashes, printable = filter_keys(table.filter(pa.array(~remove)).columns)
    return splice_out(
        data,
        remove,
        encode or (lambda tables: encode_row_groups(tables, DATA_DICTIONARY_COLUMNS)),
        lambda rows, groups: filter_entry(hashes, printable, table.column_names, rows, groups),
    )


def _range(group: pq.RowGroupMetaData) -> tuple[int, int]:
    columns = [group.column(j) for j in range(group.num_columns)]
    starts = [c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset for c in columns]
    return min(starts), max(s + c.total_compressed_size for s, c in zip(starts, columns))


def _without_offsets(group: pq.RowGroupMetaData) -> dict:
    entry = group.to_dict()
    for column in entry["columns"]:
        for key in ("file_offset", "data_page_offset", "dictionary_page_offset", "index_page_offset"):
            column.pop(key, None)
    return entry


def _footer(data: bytes) -> bytes:
    (length,) = struct.unpack("<I", data[-8:-4])
    return data[-8 - length : -8]


@pytest.mark.parametrize("seed", range(12))
def test_a_spliced_file_holds_exactly_the_kept_rows_and_copies_the_other_groups_byte_for_byte(seed):
    rng = np.random.default_rng(seed)
    table = _sessions(int(rng.integers(2_000, 9_000)), seed)
    data = _file(table, int(rng.integers(150, 700)))
    metadata = pq.read_metadata(pa.BufferReader(data))
    users = table.column("user_id").to_pylist()
    subjects = set(rng.choice(users, int(rng.integers(1, 4))).tolist())
    remove = np.array([u in subjects for u in users])
    spliced = _splice(data, remove)
    groups = metadata.num_row_groups
    touched = {
        g
        for g in range(groups)
        if remove[sum(metadata.row_group(i).num_rows for i in range(g)) :][: metadata.row_group(g).num_rows].any()
    }
    touched_rows = sum(metadata.row_group(g).num_rows for g in touched)
    if 2 * touched_rows > metadata.num_rows:  # re-encoding most of the file: a whole rewrite
        assert spliced is None
        return
    assert spliced is not None
    payload, reencoded = spliced
    assert set(reencoded) == touched
    expected = table.filter(pa.array(~remove))
    assert pq.read_table(pa.BufferReader(payload)).equals(expected)
    new = pq.read_metadata(pa.BufferReader(payload))
    assert new.num_rows == expected.num_rows and new.num_row_groups == groups
    for g in range(groups):
        old, now = metadata.row_group(g), new.row_group(g)
        if g in touched:
            assert now.num_rows < old.num_rows
            continue
        assert _without_offsets(now) == _without_offsets(old)
        (a, b), (c, d) = _range(old), _range(now)
        assert payload[c:d] == data[a:b]  # copied byte for byte (moved only if a group before it grew or shrank)
    id_filter, why = read_filter(new, INDEX_ID_COLUMNS)
    assert id_filter is not None, why
    # The filter of the rows that remain: the bits a whole rewrite of them would have.
    whole = pq.read_metadata(pa.BufferReader(_file(expected, 1_000_000))).metadata
    assert new.metadata[BITS_KEY] == whole[BITS_KEY]
    assert id_filter.may_contain(query_hashes(sorted(set(users) - subjects))).all()


def test_nothing_of_the_removed_rows_is_left_in_the_spliced_bytes():
    # Uncompressed, a removed identifier would be visible as text if its pages or statistics stayed.
    table = _sessions(6_000, 99)
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=1_000, compression="none", use_dictionary=False)
    data = sink.getvalue()
    victim = "user-secret-victim"
    rows = table.to_pylist()
    rows[2_500]["user_id"] = victim
    rows[2_501]["user_id"] = victim
    rows[2_502]["email"] = f"{victim}@example.org"
    table = pa.Table.from_pylist(rows, SESSION_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=1_000, compression="none", use_dictionary=False)
    data = sink.getvalue()
    assert data.count(victim.encode()) >= 3
    remove = np.zeros(table.num_rows, bool)
    remove[2_500:2_503] = True
    encode = lambda tables: _uncompressed(tables)  # noqa: E731
    payload, groups = _splice(data, remove, encode)
    assert groups == [2]
    assert victim.encode() not in payload
    assert pq.read_table(pa.BufferReader(payload)).equals(table.filter(pa.array(~remove)))


def _uncompressed(tables):
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, tables[0].schema, compression="none", use_dictionary=False) as writer:
        for t in tables:
            writer.write_table(t, row_group_size=max(1, t.num_rows))
    return sink.getvalue()


def test_a_re_encoded_group_larger_than_the_old_one_moves_the_groups_after_it():
    table = _sessions(4_000, 3)
    remove = np.zeros(table.num_rows, bool)
    remove[1_500] = True
    data = _file(table, 1_000)
    payload, groups = _splice(data, remove, _uncompressed)
    assert groups == [1]
    assert pq.read_table(pa.BufferReader(payload)).equals(table.filter(pa.array(~remove)))
    old, new = pq.read_metadata(pa.BufferReader(data)), pq.read_metadata(pa.BufferReader(payload))
    grown = (_range(new.row_group(1))[1] - _range(new.row_group(1))[0]) - (
        _range(old.row_group(1))[1] - _range(old.row_group(1))[0]
    )
    assert grown > 0
    assert _range(new.row_group(0)) == _range(old.row_group(0))
    for g in (2, 3):
        (a, b), (c, d) = _range(old.row_group(g)), _range(new.row_group(g))
        assert (c - a, d - b) == (grown, grown) and payload[c:d] == data[a:b]
    assert _splice(payload, np.eye(1, table.num_rows - 1, 3_500, dtype=bool)[0]) is not None  # and again


def test_a_spliced_file_splices_again():
    table = _sessions(5_000, 5)
    data = _file(table, 700)
    users = table.column("user_id").to_pylist()
    spliced = 0
    once = [u for u, n in zip(*np.unique(users, return_counts=True)) if n == 1]
    for subject in (once[0], once[len(once) // 2], once[-1]):
        current = pq.read_table(pa.BufferReader(data))
        remove = pc.equal(current.column("user_id"), subject).to_numpy(zero_copy_only=False)
        result = _splice(data, remove)
        assert result is not None  # each subject is in a few of the 8 groups
        data, spliced = result[0], spliced + 1
        table = table.filter(pc.not_equal(table.column("user_id"), subject))
        assert pq.read_table(pa.BufferReader(data)).equals(table)
    assert spliced == 3


def test_whole_rewrites_where_a_splice_cannot_be_plain():
    table = _sessions(4_000, 3)
    users = table.column("user_id").to_pylist()
    one = np.zeros(len(users), bool)
    one[1_500] = True  # in the second of four groups
    data = _file(table, 1_000)
    assert _splice(data, np.zeros(len(users), bool)) is None  # nothing to remove
    assert _splice(data, np.ones(len(users), bool)) is None  # every group touched
    emptied = np.zeros(len(users), bool)
    emptied[1_000:2_000] = True
    assert _splice(data, emptied) is None  # a whole group removed
    assert _splice(_file(table, 10_000), one) is None  # one group: nothing to keep as it is
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=1_000, write_page_index=True)
    assert _splice(sink.getvalue(), one) is None  # page indexes would describe the old pages
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=1_000, bloom_filter_options={"user_id": {"ndv": 2_000}})
    assert _splice(sink.getvalue(), one) is None  # a Bloom filter would still answer for the removed rows
    assert _splice(data, one) is not None  # the same file, the same row: spliced

    def other_schema(tables):
        return encode_row_groups([t.cast(t.schema.set(1, pa.field("event_time_ms", pa.float64()))) for t in tables])

    assert _splice(data, one, other_schema) is None
    never = lambda *args: pytest.fail("not reached")  # noqa: E731
    for damaged in (data[:-8] + struct.pack("<I", 10**9) + b"PAR1", data[:-4] + b"PAR0", data[:4] + data[-300:]):
        with pytest.raises(SpliceError):
            splice_out(damaged, one, never, never)
    with pytest.raises(SpliceError):
        splice_out(data, one[:-1], never, never)


@pytest.mark.parametrize(
    "writer",
    [
        lambda sink: write_data_parquet(sink, _sessions(20_000, 1)),
        lambda sink: write_index_file(
            sink,
            pa.table(
                {
                    "user_id": [f"u{i}" for i in range(9_000)],
                    "id_kind": ["user_id"] * 9_000,
                    "path": ["dt=x/part-1.parquet"] * 9_000,
                    "records": [1] * 9_000,
                    "min_event_ms": [0] * 9_000,
                    "max_event_ms": [1] * 9_000,
                }
            ),
            0,
            1,
        ),
        lambda sink: pq.write_table(
            pa.table(
                {
                    "a": pa.array([[1, 2], None], pa.list_(pa.int64())),
                    "b": pa.array([{"x": 1.5}, None]),
                    "c": pa.array([True, False]),
                    "d": pa.array([b"\x00", b"\xff"]),
                    "e": pa.array(["2026-01-01", None], pa.string()).cast(pa.string()),
                }
            ),
            sink,
            write_page_index=True,
            write_statistics=True,
        ),
    ],
)
def test_the_codec_reads_and_writes_a_footer_back_byte_for_byte(writer):
    sink = io.BytesIO()
    writer(sink)
    footer = _footer(sink.getvalue())
    parsed, end = tc.read_struct(footer)
    assert end == len(footer)
    assert tc.write_struct(parsed) == footer
    assert tc.skip_struct(footer, 0) == len(footer)
    assert set(tc.field_spans(footer)) == set(parsed.fields)


def test_the_codec_keeps_long_field_ids_long_lists_maps_doubles_and_booleans():
    inner = tc.Struct({1: (tc.TRUE, True), 2: (tc.FALSE, False)})
    value = tc.Struct(
        {
            1: (tc.I32, -7),
            40: (tc.I64, 2**62),  # a field id 39 past the last: its own header
            41: (tc.LIST, tc.Seq(tc.STRUCT, [inner] * 20)),  # 20 elements: the long list header
            42: (tc.MAP, tc.Map(tc.BINARY, tc.I16, [(b"k", -1), (b"l", 300)])),
            43: (tc.DOUBLE, struct.pack("<d", 1.25)),
            44: (tc.LIST, tc.Seq(tc.TRUE, [1, 2, 1])),
            45: (tc.MAP, tc.Map(0, 0, [])),
            46: (tc.BYTE, 0xFE),
        }
    )
    data = tc.write_struct(value)
    parsed, end = tc.read_struct(data)
    assert end == len(data) and tc.write_struct(parsed) == data
    assert parsed.get(40) == 2**62 and parsed.get(1) == -7 and parsed.get(42).items == [(b"k", -1), (b"l", 300)]
    assert [s.get(1) for s in parsed.get(41).items] == [True] * 20
    assert tc.skip_struct(data, 0) == len(data)
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(tc.ThriftError):
            tc.read_struct(data[:cut])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@pytest.mark.parametrize(
    "data",
    [
        bytes([0x19, 0xF0 | tc.BYTE]) + _varint(2**62) + b"\x00",  # a list claiming 2**62 one-byte elements
        bytes([0x1B]) + _varint(2**40) + bytes([0x33]) + b"\x00",  # a map claiming 2**40 pairs
        bytes([0x18]) + _varint(100) + b"xy",  # a binary longer than what is left
        b"\x19" * 5_000 + b"\x00",  # lists nested 5,000 deep
        b"\x1c" * 5_000 + b"\x00" * 5_001,  # structs nested 5,000 deep
        b"\x15",  # an integer field with no value
        b"\x1d\x00",  # an unknown compact type
    ],
)
def test_malformed_compact_bytes_raise_thrift_errors_at_once(data):
    for read in (tc.read_struct, tc.skip_struct, tc.field_spans):
        with pytest.raises(tc.ThriftError):
            read(data)
    with pytest.raises(tc.ThriftError):
        tc.list_element_spans(bytes([0xF0 | tc.BYTE]) + _varint(2**62), 0)


def _with_footer(data: bytes, edit) -> bytes:
    (length,) = struct.unpack("<I", data[-8:-4])
    meta, _ = tc.read_struct(data[-8 - length : -8])
    edit(meta)
    footer = tc.write_struct(meta)
    return data[: -8 - length] + footer + struct.pack("<I", len(footer)) + b"PAR1"


def _column_meta(meta: tc.Struct, group: int) -> tc.Struct:
    return meta.get(4).items[group].get(1).items[0].get(3)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: _column_meta(m, 1).fields.__setitem__(11, (tc.BINARY, b"xx")),  # dictionary offset as text
        lambda m: m.get(4).items[2].fields.__setitem__(5, (tc.BINARY, b"xx")),  # a moved group's offset as text
        lambda m: _column_meta(m, 2).fields.__setitem__(10, (tc.DOUBLE, b"\0" * 8)),
        lambda m: m.get(4).items[1].get(1).items[0].fields.__setitem__(3, (tc.I32, 5)),  # metadata not a struct
        lambda m: m.fields.__setitem__(5, (tc.BINARY, b"entries")),  # key-value list stored as text
    ],
)
def test_a_footer_pyarrow_reads_but_not_as_the_spec_types_it_is_never_spliced_wrong(edit):
    # pyarrow's reader skips an optional field stored with another type; the splice must not guess.
    table = pa.table({"a": [f"v{i}" for i in range(30)]})
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, table.schema, use_dictionary=False) as writer:
        writer.write_table(table, row_group_size=10)
        writer.add_key_value_metadata({b"k": b"v"})
    data = _with_footer(sink.getvalue(), edit)
    remove = np.zeros(30, bool)
    remove[15] = True

    def grow(tables):  # larger than the old group: the groups after it move
        out = io.BytesIO()
        with pq.ParquetWriter(out, tables[0].schema, use_dictionary=False, compression="none") as writer:
            for t in tables:
                writer.write_table(t, row_group_size=len(t))
        return out.getvalue()

    try:
        result = splice_out(data, remove, grow, lambda rows, groups: {b"k": b"w"})
    except SpliceError:
        return
    if result is not None:
        assert pq.read_table(pa.BufferReader(result[0])).equals(table.filter(pa.array(~remove)))
