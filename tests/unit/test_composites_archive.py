"""``WriteArchive`` alone, into a temporary folder: exact partition files, records and index rows."""

from __future__ import annotations

import glob
import os

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_rtbf.archive.write import INDEX_DIR, WriteArchive
from tests.helpers.composites import rows_of, session_rows
from tests.helpers.data import T0

HOUR_MS = 3_600_000
# One element, so one bundle: one file per partition and one index file.
BATCH = session_rows(
    [
        ("alice", T0 + 1_000, "alice@example.com"),
        ("bob", T0 + 2_000),
        ("alice", T0 + HOUR_MS + 5_000),
        ("alice", T0 + 3_000, "alice@example.com"),
    ]
)


def _files(root: str, pattern: str) -> list[str]:
    return sorted(os.path.relpath(f, root) for f in glob.glob(os.path.join(root, pattern), recursive=True))


def _partition(path: str) -> str:
    return os.path.dirname(path)


def test_archive_writes_one_file_per_partition_and_an_index_naming_them(tmp_path):
    root = str(tmp_path / "archive")
    p = TestPipeline()
    paths = p | beam.Create([BATCH]) | WriteArchive(root, partition_s=3600)
    relative = paths | beam.Map(lambda path: _partition(os.path.relpath(path, root)))
    assert_that(relative, equal_to(["dt=2026-01-01/hour=00", "dt=2026-01-01/hour=01"]))
    p.run()

    data = _files(root, "dt=*/**/*.parquet")
    assert [_partition(f) for f in data] == ["dt=2026-01-01/hour=00", "dt=2026-01-01/hour=01"]
    first = pq.read_table(os.path.join(root, data[0]))
    assert rows_of(first, "user_id", "event_time_ms", "email") == [
        ("alice", T0 + 1_000, "alice@example.com"),
        ("bob", T0 + 2_000, None),
        ("alice", T0 + 3_000, "alice@example.com"),
    ]
    assert first.schema.names == BATCH.schema.names
    second = pq.read_table(os.path.join(root, data[1]))
    assert rows_of(second, "user_id", "event_time_ms") == [("alice", T0 + HOUR_MS + 5_000)]

    index_files = _files(root, f"{INDEX_DIR}/*.parquet")
    assert len(index_files) == 1
    index = pq.read_table(os.path.join(root, index_files[0])).sort_by(
        [("path", "ascending"), ("id_kind", "descending"), ("user_id", "ascending")]
    )
    columns = ("user_id", "id_kind", "path", "records", "min_event_ms", "max_event_ms")
    assert rows_of(index, *columns) == [
        ("alice", "user_id", data[0], 2, T0 + 1_000, T0 + 3_000),
        ("bob", "user_id", data[0], 1, T0 + 2_000, T0 + 2_000),
        ("alice@example.com", "email", data[0], 2, T0 + 1_000, T0 + 3_000),
        ("alice", "user_id", data[1], 1, T0 + HOUR_MS + 5_000, T0 + HOUR_MS + 5_000),
    ]


def test_a_run_id_stages_files_and_names_where_they_will_be_published(tmp_path):
    root = str(tmp_path / "archive")
    p = TestPipeline()
    paths = p | beam.Create([BATCH]) | WriteArchive(root, partition_s=86_400, run_id="run1")
    assert_that(
        paths | beam.Map(lambda path: (os.path.dirname(path), os.path.basename(path).startswith("part-run1-"))),
        equal_to([(os.path.join(root, "dt=2026-01-01"), True)]),
    )
    p.run()
    assert _files(root, "dt=*") == []  # nothing published before the run commits
    staged = _files(root, "_staging/run1/**/*.parquet")
    assert [os.path.dirname(f) for f in staged] == ["_staging/run1/_index", "_staging/run1/dt=2026-01-01"]
    table = pq.read_table(os.path.join(root, staged[1]))
    assert sorted(table.column("user_id").to_pylist()) == ["alice", "alice", "alice", "bob"]
