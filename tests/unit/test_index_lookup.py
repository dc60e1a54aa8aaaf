"""The bucketed, sorted subject index: a lookup reads footers and a few row groups, and finds
exactly the rows a whole-index scan finds (older unbucketed index files included)."""

from __future__ import annotations

import glob
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from beam_rtbf.archive import write as archive_write
from beam_rtbf.archive.index import lookup_archive_index, lookup_hashes, lookup_index_file
from beam_rtbf.archive.index_footer import read_index_footer
from beam_rtbf.archive.write import INDEX_DIR, INDEX_SCHEMA, id_hashes, write_index_files
from beam_rtbf.purge.rewrite import FileTask, rewrite_file

COLUMNS = list(INDEX_SCHEMA.names)


def _index_rows(n: int, files: int) -> pa.Table:
    """``n`` rows: user ids and e-mail aliases spread over ``files`` partition files."""
    ids = [f"user-{i % (n // 3)}" if i % 5 else f"User-{i}@Example.com" for i in range(n)]
    return pa.table(
        {
            "user_id": pa.array(ids, pa.string()),
            "id_kind": pa.array(["user_id" if i % 5 else "email" for i in range(n)], pa.string()),
            "path": pa.array([f"dt=2026-01-01/hour={i % files:02d}/part-a.parquet" for i in range(n)], pa.string()),
            "records": pa.array([1 + i % 3 for i in range(n)], pa.int64()),
            "min_event_ms": pa.array(range(n), pa.int64()),
            "max_event_ms": pa.array(range(n), pa.int64()),
        },
        schema=INDEX_SCHEMA,
    )


def _sorted(table: pa.Table) -> list[dict]:
    return table.select(COLUMNS).sort_by([(c, "ascending") for c in COLUMNS]).to_pylist()


@pytest.fixture
def small_buckets(monkeypatch):
    monkeypatch.setattr(archive_write, "INDEX_FILE_ROWS", 1_000)
    monkeypatch.setattr(archive_write, "INDEX_ROW_GROUP_ROWS", 100)


def test_a_lookup_finds_what_a_whole_scan_finds_reading_a_few_row_groups(tmp_path, small_buckets):
    archive = str(tmp_path / "archive")
    rows = _index_rows(5_000, files=7)
    paths = write_index_files(os.path.join(archive, INDEX_DIR), "part-r1", rows)
    legacy = rows.slice(0, 600)  # an index file written before buckets and footers
    pq.write_table(legacy, os.path.join(archive, INDEX_DIR, "part-legacy.parquet"))
    assert len(paths) == 5
    footers = [read_index_footer(pq.read_metadata(p)) for p in paths]
    assert sorted(f.bucket for f in footers) == [0, 1, 2, 3, 4] and {f.buckets for f in footers} == {5}
    assert sum(pq.read_metadata(p).num_rows for p in paths) == rows.num_rows
    users = pc.equal(rows.column("id_kind"), "user_id")
    assert sum(f.user_id_records for f in footers) == pc.sum(rows.filter(users).column("records")).as_py()
    assert set().union(*(f.paths for f in footers)) == set(rows.column("path").to_pylist())

    everything = pa.concat_tables([rows, legacy])
    wanted = ["user-7", "User-10@Example.com", "user-1665", "nobody", "user-7 "]
    found = lookup_archive_index(archive, wanted)
    expected = everything.filter(pc.is_in(everything.column("user_id"), value_set=pa.array(wanted)))
    assert found.num_rows == expected.num_rows > 0
    assert _sorted(found) == _sorted(expected)

    hashes = lookup_hashes(["user-7"])
    lookups = [lookup_index_file(p, ["user-7"], hashes, ["path"]) for p in paths]
    assert [look.row_groups_read for look in lookups].count(0) == 4  # other buckets: the footer only
    (mine,) = [look for look in lookups if look.row_groups_read]
    assert mine.row_groups_read <= 2 < mine.row_groups
    assert mine.rows.num_rows == 3 and mine.rows.column_names == ["user_id", "path"]


def test_a_purged_index_file_keeps_its_bucket_and_recounts_its_footer(tmp_path, small_buckets):
    archive = str(tmp_path / "archive")
    rows = _index_rows(5_000, files=7)
    paths = write_index_files(os.path.join(archive, INDEX_DIR), "part-r1", rows)
    (holder,) = [p for p in paths if lookup_index_file(p, ["user-7"], lookup_hashes(["user-7"]), []).rows.num_rows]
    before = read_index_footer(pq.read_metadata(holder))
    result = rewrite_file(FileTask("index", holder), {"user-7": ("req-7",)}, str(tmp_path / "journal"))
    assert (result.status, result.removed, result.records_before - result.records_after) == (
        "purged",
        {"req-7": 3},
        3,
    )
    after = read_index_footer(pq.read_metadata(holder))
    assert (after.bucket, after.buckets) == (before.bucket, before.buckets)
    kept = pq.read_table(holder)
    is_user = pc.equal(kept.column("id_kind"), "user_id")
    assert after.user_id_records == pc.sum(kept.filter(is_user).column("records")).as_py()
    assert after.user_id_records < before.user_id_records
    order = id_hashes(kept).tolist()
    assert order == sorted(order)  # still in the order of the identifiers' hashes
    assert lookup_archive_index(archive, ["user-7"]).num_rows == 0
    assert len(glob.glob(os.path.join(archive, INDEX_DIR, "*.parquet"))) == 5


def test_an_older_index_file_rewritten_by_a_purge_keeps_its_order_and_gains_a_footer(tmp_path):
    archive = str(tmp_path / "archive")
    os.makedirs(os.path.join(archive, INDEX_DIR))
    legacy = os.path.join(archive, INDEX_DIR, "part-legacy.parquet")
    rows = _index_rows(3_000, files=3)
    pq.write_table(rows, legacy)
    assert read_index_footer(pq.read_metadata(legacy)) is None
    result = rewrite_file(FileTask("index", legacy), {"user-7": ("req-7",)}, str(tmp_path / "journal"))
    assert (result.status, result.removed) == ("purged", {"req-7": 3})
    footer = read_index_footer(pq.read_metadata(legacy))
    assert (footer.bucket, footer.buckets) == (0, 1)
    keep = pc.invert(pc.equal(rows.column("user_id"), "user-7"))
    assert pq.read_table(legacy).to_pylist() == rows.filter(keep).to_pylist()
    for user in ("user-8", "User-10@Example.com", "user-7"):
        expected = rows.filter(keep).filter(pc.equal(rows.filter(keep).column("user_id"), user))
        assert _sorted(lookup_archive_index(archive, [user])) == _sorted(expected)


def test_an_identifier_the_filters_rule_out_reads_no_row_group_and_one_present_is_still_found(tmp_path, small_buckets):
    archive = str(tmp_path / "archive")
    rows = _index_rows(5_000, files=7)
    paths = write_index_files(os.path.join(archive, INDEX_DIR), "part-r1", rows)
    absent = [f"nobody-{i}" for i in range(20)]
    lookups = [lookup_index_file(p, absent, lookup_hashes(absent), ["path"]) for p in paths]
    assert [look.row_groups_read for look in lookups] == [0] * len(paths)  # footers only
    assert all(look.rows.num_rows == 0 for look in lookups)
    present = [lookup_index_file(p, ["user-7"], lookup_hashes(["user-7"]), ["path"]) for p in paths]
    assert sum(look.rows.num_rows for look in present) == 3 and sum(look.row_groups_read for look in present) >= 1


def test_the_footer_cache_answers_as_the_files_do_opens_nothing_it_rules_out_and_sees_a_rewrite(
    tmp_path, small_buckets, monkeypatch
):
    from apache_beam.io.filesystems import FileSystems

    from beam_rtbf.archive.index import FooterCache

    archive = str(tmp_path / "archive")
    rows = _index_rows(5_000, files=7)
    write_index_files(os.path.join(archive, INDEX_DIR), "part-r1", rows)
    cache = FooterCache()
    wanted = ["user-7", "User-10@Example.com", "nobody"]
    expected = _sorted(lookup_archive_index(archive, wanted))
    assert _sorted(lookup_archive_index(archive, wanted, cache=cache)) == expected and len(expected) == 4
    assert len(cache) == 5  # every bucket file's footer

    opened = []
    real_open = FileSystems.open
    monkeypatch.setattr(FileSystems, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    assert lookup_archive_index(archive, ["nobody", "nobody-else"], cache=cache).num_rows == 0
    assert opened == []  # the cached footers and filters answered
    assert _sorted(lookup_archive_index(archive, wanted, cache=cache)) == expected
    assert 1 <= len(opened) <= 2  # only the bucket files that may hold them

    # A purge rewrites a file in place (new size and time): the cache reads it again, never answers from the old footer.
    (holder,) = [
        p
        for p in glob.glob(os.path.join(archive, INDEX_DIR, "*.parquet"))
        if "user-7" in pq.read_table(p).column("user_id").to_pylist()
    ]
    rewrite_file(FileTask("index", holder), {"user-7": ("req-7",)}, str(tmp_path / "journal"))
    assert lookup_archive_index(archive, ["user-7"], cache=cache).num_rows == 0
    assert _sorted(lookup_archive_index(archive, wanted, cache=cache)) == _sorted(lookup_archive_index(archive, wanted))


def test_the_footer_cache_stays_within_its_bytes_and_keeps_answering_when_the_index_outgrows_it():
    import numpy as np

    from beam_rtbf.archive.idfilter import IdFilter
    from beam_rtbf.archive.index import FooterCache
    from beam_rtbf.archive.index_footer import IndexFooter

    id_filter = IdFilter.of_hashes(np.arange(1_000, dtype=np.uint64))
    cost = 256 + len("p.parquet") + id_filter.nbytes
    cache = FooterCache(max_bytes=3 * cost)

    def scan(files: list[str]) -> int:
        """One lookup over ``files`` in order, as lookup_archive_index does: how many the cache answered."""
        cache.new_scan()
        hits = 0
        for name in files:
            if cache.get((name, (1, 0.0))) is not None:
                hits += 1
            else:
                cache.put((name, (1, 0.0)), IndexFooter(0, 1, ["p.parquet"], 1, []), id_filter, 1)
            assert cache.nbytes <= 3 * cost
        return hits

    files = [f"f{i}" for i in range(10)]
    assert scan(files) == 0 and len(cache) == 3
    # More files than it holds, visited in the same order every time: a least-recently-used cache
    # would evict each entry just before its next use and answer none; this one answers for 3.
    assert [scan(files) for _ in range(3)] == [3, 3, 3]
    assert cache.get(("f9", (2, 0.0))) is None  # another size: another file
    # Files that are gone (rewritten: new stamps) make room after a scan without them.
    renamed = [f"g{i}" for i in range(10)]
    assert scan(renamed) == 0  # the old entries were used in the scan before: still kept
    assert scan(renamed) == 0 and {k for k in cache._entries} == {(f"g{i}", (1, 0.0)) for i in range(3)}
    assert scan(renamed) == 3
