"""Identifier filters in Parquet footers: never a false "absent", and trusted only when bound to the file."""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_rtbf.archive.idfilter import (
    BITS_KEY,
    FOOTER_KEY,
    PROBES,
    IdFilter,
    filter_keys,
    query_hashes,
    read_filter,
    string_hashes,
    write_parquet,
)
from beam_rtbf.archive.write import INDEX_ID_COLUMNS
from beam_rtbf.identifiers import CANONICAL_FORM, canonical_id
from beam_rtbf.purge.verify import StoredFile, VerifyIdentifiers, verify_file
from tests.unit.test_identifiers import TRICKY


def _reference_hash(value: str | None) -> int:
    """The documented hash, one byte at a time in Python."""
    data = (value or "").encode()
    h = 0
    for byte in data:
        h = (h * 0x100000001B3 + byte + 1) % 2**64
    h ^= (len(data) * 0x9E3779B97F4A7C15) % 2**64
    for shift, multiplier in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        h = ((h ^ (h >> shift)) * multiplier) % 2**64
    return h ^ (h >> 31)


def test_string_hashes_are_the_documented_hash_for_every_length_nulls_and_slices():
    values = [*TRICKY, None, "x" * 64, "y" * 65, "é" * 70, "", "u1", None, "z" * 500]
    expected = [_reference_hash(v) for v in values]
    assert string_hashes(pa.array(values, pa.string())).tolist() == expected
    assert string_hashes(pa.array(values, pa.string()).slice(5)).tolist() == expected[5:]
    assert string_hashes(pa.chunked_array([values[:4], values[4:]], pa.string())).tolist() == expected


def test_probe_positions_are_the_documented_double_hashing_for_any_filter_size():
    rng = np.random.default_rng(7)
    hashes = rng.integers(0, 2**64, size=2_000, dtype=np.uint64, endpoint=False)
    hashes[:3] = [0, 2**64 - 1, 2**32 - 1]
    for size_bits in (64, 128, 4_160, 400_064, 2**31 - 64, 2**32 + 64, 2**40):
        probes = IdFilter(size_bits, PROBES)._positions(hashes)
        expected = [
            [((int(h) & 0xFFFFFFFF) + i * ((int(h) >> 32) | 1)) % size_bits for i in range(PROBES)] for h in hashes
        ]
        assert probes.tolist() == expected, size_bits


def test_the_filter_keys_are_the_distinct_lowered_trimmed_values_of_every_column():
    user = pa.chunked_array([["U1", " u1 ", None], ["u2", "u2"]], pa.string())
    email = pa.array(["A@x.org", None, "a@x.org ", "u1", None], pa.string())
    hashes, printable = filter_keys([user, email, pa.nulls(5, pa.string())])
    assert printable
    assert sorted(hashes.tolist()) == sorted(_reference_hash(v) for v in ("u1", "u2", "a@x.org"))
    assert filter_keys([pa.array(["ok", "caf\u00e9"])])[1] is False


def _table(**columns) -> pa.Table:
    n = len(next(iter(columns.values())))
    base = {"user_id": pa.array([f"user-{i}" for i in range(n)]), "event_time_ms": pa.array(range(n), pa.int64())}
    return pa.table({**base, **{k: pa.array(v, pa.string()) for k, v in columns.items()}})


def _written(table: pa.Table, **kwargs) -> pq.FileMetaData:
    sink = io.BytesIO()
    write_parquet(sink, table, INDEX_ID_COLUMNS, **kwargs)
    return pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata


def test_a_filter_never_says_absent_for_a_value_the_file_holds_in_any_spelling():
    printable = [v for v in TRICKY if v.isascii() and v.isprintable()]
    assert len(printable) >= 10
    emails = [v if i % 3 else None for i, v in enumerate(printable)]
    table = _table(email=emails, device_id=[f"d-{i}" for i in range(len(printable))])
    metadata = _written(table, row_group_rows=5)
    id_filter, why = read_filter(metadata, INDEX_ID_COLUMNS)
    assert why == "" and id_filter is not None
    values = [*table.column("user_id").to_pylist(), *emails, *table.column("device_id").to_pylist()]
    held = {canonical_id(v) for v in values if v is not None}
    assert id_filter.may_contain(query_hashes(held)).all()
    others = pa.array([f"other-{i}" for i in range(20_000)], pa.string())
    assert id_filter.may_contain(string_hashes(others)).mean() < 0.02  # ~0.8% by design
    # Checked a few at a time (only the probed bytes decoded), the answers are the same.
    fresh, _ = read_filter(metadata, INDEX_ID_COLUMNS)
    few = [fresh.may_contain(string_hashes(others.slice(i, 1)))[0] for i in range(0, 2_000, 7)]
    assert few == id_filter.may_contain(string_hashes(others)).tolist()[0:2_000:7]


@pytest.mark.parametrize("value", [v for v in TRICKY if not (v.isascii() and v.isprintable())])
def test_a_file_holding_a_value_outside_printable_ascii_is_never_proven_by_its_filter(value):
    metadata = _written(_table(email=["a@x.com", value, None]))
    assert read_filter(metadata, INDEX_ID_COLUMNS) == (
        None,
        "identifier values outside printable ASCII: the filter proves nothing",
    )


def _with_footer(table: pa.Table, entries: dict[bytes, bytes]) -> pq.FileMetaData:
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, table.schema) as writer:
        writer.write_table(table)
        writer.add_key_value_metadata(entries)
    return pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata


def test_a_filter_is_trusted_only_when_bound_to_the_file_it_is_in():
    table = _table(email=["a@x.com", None, "b@x.com"])
    metadata = _written(table)
    assert read_filter(metadata, INDEX_ID_COLUMNS)[0] is not None
    entry = {key: metadata.metadata[key] for key in (FOOTER_KEY, BITS_KEY)}

    # Read and written again by another tool (here pyarrow itself): the filter is not copied.
    sink = io.BytesIO()
    pq.write_table(pq.read_table(io.BytesIO(_parquet_bytes(table))), sink)
    assert read_filter(pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata, INDEX_ID_COLUMNS) == (
        None,
        "no identifier filter in the footer",
    )
    # Copied by hand onto other rows: not bound to them.
    other_rows = _table(email=["a@x.com", None, "b@x.com", "c@x.com"])
    assert read_filter(_with_footer(other_rows, entry), INDEX_ID_COLUMNS)[1] == (
        "identifier filter describes other rows than the file's"
    )
    # A file with an identifier column the filter does not cover.
    wider = table.append_column("device_id", pa.array(["d1", "d2", "d3"]))
    assert read_filter(_with_footer(wider, entry), INDEX_ID_COLUMNS)[1] == (
        "identifier filter does not cover every identifier column"
    )
    # Built under another canonical form (other rules or another Unicode version).
    body = json.loads(entry[FOOTER_KEY])
    assert body["canonical_form"] == CANONICAL_FORM
    stale = {**entry, FOOTER_KEY: json.dumps({**body, "canonical_form": "rtbf-0/unicode-9.0.0"}).encode()}
    assert read_filter(_with_footer(table, stale), INDEX_ID_COLUMNS)[1] == (
        "identifier filter built with another canonical form"
    )
    # Bits cut short are refused; damaged ones prove nothing absent.
    short = {**entry, BITS_KEY: entry[BITS_KEY][:-4]}
    assert read_filter(_with_footer(table, short), INDEX_ID_COLUMNS)[1] == "identifier filter malformed"
    damaged = read_filter(_with_footer(table, {**entry, BITS_KEY: b"%" * len(entry[BITS_KEY])}), INDEX_ID_COLUMNS)[0]
    assert damaged.may_contain(string_hashes(pa.array(["nobody", "a@x.com"]))).tolist() == [True, True]


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    write_parquet(sink, table, INDEX_ID_COLUMNS)
    return sink.getvalue()


@pytest.mark.parametrize("spelling", [" Ann@Example.com ", "ann@example.com", "\u200bANN@example.COM"])
def test_verification_proves_absence_by_the_footer_and_reads_every_other_file(tmp_path, spelling):
    """Files written with a filter are not read for absent subjects; a possible match, or a file
    without a usable filter, is read and its records counted."""
    holder = _table(email=[None, spelling, None])
    paths = {}
    for name, table, with_filter in (
        ("clean", _table(email=["bob@example.com", None, None]), True),
        ("holder", holder, True),
        ("plain", holder, False),  # the same records without a filter: read whole
    ):
        paths[name] = str(tmp_path / f"{name}.parquet")
        if with_filter:
            with open(paths[name], "wb") as handle:
                write_parquet(handle, table, INDEX_ID_COLUMNS)
        else:
            pq.write_table(table, paths[name])
    ids = VerifyIdentifiers({"ann@example.com": ["req-ann"]})
    results = {name: verify_file(StoredFile("archive", path), ids) for name, path in paths.items()}
    assert {n: (r.rows, r.found, r.by_metadata, r.error) for n, r in results.items()} == {
        "clean": (3, {}, True, ""),
        "holder": (3, {"req-ann": 1}, False, ""),
        "plain": (3, {"req-ann": 1}, False, ""),
    }


def test_an_empty_table_still_gets_a_filter_bound_to_its_one_empty_row_group():
    metadata = _written(_table(email=[]))
    assert metadata.num_rows == 0 and read_filter(metadata, INDEX_ID_COLUMNS)[1] == ""
    assert not read_filter(metadata, INDEX_ID_COLUMNS)[0].may_contain(string_hashes(pa.array(["u1"]))).any()
    assert np.array_equal(string_hashes(pa.array([], pa.string())), np.zeros(0, np.uint64))


def _stored_arrow_schema_metadata(metadata: pq.FileMetaData) -> dict:
    stored = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(metadata.metadata[b"ARROW:schema"])))
    return dict(stored.metadata or {})


def test_a_filter_copied_with_the_table_by_another_tool_proves_nothing(tmp_path):
    """``pq.ParquetFile(...).read()`` carries the footer's entries into the table and pyarrow writes
    them back: a tool that changed an identifier and kept the row counts must not get the old
    filter's word that the new value is absent."""
    path = str(tmp_path / "part.parquet")
    with open(path, "wb") as handle:
        write_parquet(handle, _table(email=["a@x.com", None, "b@x.com"]), INDEX_ID_COLUMNS)
    assert _stored_arrow_schema_metadata(pq.read_metadata(path)) == {}  # the writer's own file: footer only
    table = pq.ParquetFile(path).read()
    assert FOOTER_KEY in table.schema.metadata
    pq.write_table(table.set_column(2, "email", pa.array([None, "ann@example.com", None])), path)
    copied = pq.read_metadata(path)
    assert FOOTER_KEY in copied.metadata and copied.num_rows == 3  # the footer looks bound to the rows
    assert read_filter(copied, INDEX_ID_COLUMNS) == (
        None,
        "identifier filter copied with the table by a tool that rewrote the file",
    )
    result = verify_file(StoredFile("archive", path), VerifyIdentifiers({"ann@example.com": ["req-ann"]}))
    assert (result.rows, result.found, result.by_metadata, result.error) == (3, {"req-ann": 1}, False, "")


def test_a_table_read_back_with_its_footer_is_written_with_a_new_filter_only():
    """What a purge does: read a file whole, drop a subject's rows, write the rest. The old filter
    (whose bits answer for the removed identifier) must not survive anywhere in the new file."""
    table = _table(email=["gone@x.com", "kept@x.com", None])
    read_back = pq.ParquetFile(io.BytesIO(_parquet_bytes(table))).read()
    old_bits = read_back.schema.metadata[BITS_KEY]
    kept = read_back.slice(1)
    new = pq.ParquetFile(io.BytesIO(_parquet_bytes(kept))).metadata
    assert _stored_arrow_schema_metadata(new) == {}
    assert set(new.metadata) == {b"ARROW:schema", FOOTER_KEY, BITS_KEY}
    assert new.metadata[BITS_KEY] != old_bits
    id_filter, why = read_filter(new, INDEX_ID_COLUMNS)
    assert why == ""
    probes = ["gone@x.com", "user-0", "kept@x.com", "user-1"]
    assert [bool(id_filter.may_contain(query_hashes([p]))[0]) for p in probes] == [False, False, True, True]


def test_a_purged_file_holds_no_copy_of_its_old_filter(tmp_path):
    from beam_rtbf.archive.write import write_data_file
    from beam_rtbf.purge.rewrite import FileTask, rewrite_file

    path = str(tmp_path / "archive" / "dt=2026-01-01" / "hour=00" / "part-a.parquet")
    os.makedirs(os.path.dirname(path))
    write_data_file(path, _table(email=["gone@x.com", "kept@x.com", None]))
    old_bits = pq.read_metadata(path).metadata[BITS_KEY]
    result = rewrite_file(FileTask("archive", path), {"user-0": ("req-0",)}, str(tmp_path / "journal"))
    assert (result.status, result.records_before, result.records_after) == ("purged", 3, 2)
    with open(path, "rb") as handle:
        stored = handle.read()
    assert old_bits not in stored and base64.b64decode(old_bits) not in stored
    assert _stored_arrow_schema_metadata(pq.read_metadata(path)) == {}
    id_filter, why = read_filter(pq.read_metadata(path), INDEX_ID_COLUMNS)
    assert why == "" and not id_filter.may_contain(query_hashes(["gone@x.com"])).any()


def test_a_check_of_a_few_identifiers_answers_as_the_vectorised_one():
    rng = np.random.default_rng(11)
    members = rng.integers(0, 2**64, size=3_000, dtype=np.uint64, endpoint=False)
    built = IdFilter.of_hashes(members)
    encoded = IdFilter(built.size_bits, built.probes, encoded=base64.b64encode(built.bits.tobytes()))
    others = rng.integers(0, 2**64, size=4_000, dtype=np.uint64, endpoint=False)
    for probe in (built, encoded):
        assert probe.may_contain(members).all()
        vectorised = probe.may_contain(others)  # > 8 hashes: the numpy path
        assert 0 < vectorised.sum() < 200  # some false positives (~1 %), most absent
        few = np.concatenate([probe.may_contain(others[i : i + 7]) for i in range(0, len(others), 7)])
        assert few.tolist() == vectorised.tolist()
        assert probe.may_contain(members[:5]).all()
    damaged = IdFilter(built.size_bits, built.probes, encoded=b"!!!!" * (len(encoded._encoded) // 4))
    assert damaged.may_contain(others[:3]).tolist() == [True] * 3


@pytest.mark.parametrize("bad", [b"!", b"=", b"\n", b" ", b"\xff"])
def test_bits_with_a_character_outside_base64_prove_nothing_whichever_path_reads_them(bad):
    rng = np.random.default_rng(3)
    members = rng.integers(0, 2**64, size=40, dtype=np.uint64, endpoint=False)
    built = IdFilter.of_hashes(members)
    text = bytearray(base64.b64encode(built.bits.tobytes()))
    for at in range(0, len(text), 7):
        damaged = bytes(text[:at]) + bad + bytes(text[at + 1 :])
        vectorised = IdFilter(built.size_bits, built.probes, encoded=damaged).may_contain(members)
        few = IdFilter(built.size_bits, built.probes, encoded=damaged).may_contain(members[:3])
        assert vectorised.all() and few.all()
