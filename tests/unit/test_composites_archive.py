"""``WriteArchive`` alone, into a temporary folder: exact partition files, records and index rows."""

from __future__ import annotations

import glob
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
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


def test_streaming_gathers_archive_rows_per_partition_by_default_on_the_local_runner():
    """A file per bundle made ~2 small files a second at 100 K sessions/s; the local streaming
    runner gathers 5 s per partition unless told otherwise, exactly-once outputs always gather."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from beam_rtbf.local_runner import LocalStreamingRunner
    from beam_rtbf.options import RtbfOptions
    from beam_rtbf.pipeline import archive_flush_s

    def flush(flags: list[str], runner, streaming: bool = True, once: bool = False) -> int:
        opts = PipelineOptions(flags).view_as(RtbfOptions)
        return archive_flush_s(opts, beam.Pipeline(runner=runner), streaming, once)

    local, fnapi = LocalStreamingRunner(), FnApiRunner()
    assert flush([], local) == 5
    assert flush([], local, streaming=False) == 0  # a bounded run writes a file per partition per bundle
    assert flush([], fnapi) == 0  # Prism, Flink without checkpoints: as before
    assert flush([], fnapi, once=True) == 1
    assert flush(["--archive_flush_s=0"], local) == 0
    assert flush(["--archive_flush_s=0"], fnapi, once=True) == 1  # exactly-once always gathers
    assert flush(["--archive_flush_s=12"], fnapi) == 12


def test_gathered_archive_keeps_every_row_in_files_the_index_names(tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_rtbf.local_runner import LocalStreamingRunner

    root = str(tmp_path / "archive")
    batches = [BATCH, BATCH.slice(0, 2), BATCH.slice(2)]
    with beam.Pipeline(runner=LocalStreamingRunner(), options=PipelineOptions(["--streaming"])) as p:
        _ = p | beam.Create(batches) | WriteArchive(root, partition_s=3600, flush_s=1)
    data = _files(root, "dt=*/hour=*/*.parquet")
    assert {_partition(f) for f in data} == {"dt=2026-01-01/hour=00", "dt=2026-01-01/hour=01"}
    assert len(data) <= 4  # one per partition and writer shard (2), whatever the bundles
    assert all(os.path.basename(f).startswith("part-") for f in data)
    assert sum(pq.read_metadata(os.path.join(root, f)).num_rows for f in data) == 2 * BATCH.num_rows
    index = pq.read_table(os.path.join(root, INDEX_DIR)).to_pylist()
    assert {row["path"] for row in index} == set(data)
    assert sum(row["records"] for row in index if row["id_kind"] == "user_id") == 2 * BATCH.num_rows


@pytest.mark.parametrize(("content_names", "files"), [(False, 2), (True, 1)])
def test_two_panes_with_the_same_rows_are_two_files_unless_named_by_content(tmp_path, content_names, files):
    """Without checkpoints nothing is replayed: two panes holding the same rows (repeated sessions
    without an event id) are two files, every row kept. With exactly-once outputs a file is named by
    its content, so a replay after a restore rewrites it instead of adding a copy."""
    from beam_rtbf.archive.write import _WriteGatheredFn

    root = str(tmp_path / "archive")
    write = _WriteGatheredFn(root, 3600, content_names=content_names)
    piece = pa.Table.from_batches([BATCH]).filter(pc.less(BATCH.column("event_time_ms"), T0 + HOUR_MS))
    start = T0 - T0 % HOUR_MS
    written = [path for _ in range(2) for path in write.process(((start, 0), [piece]))]
    data = _files(root, "dt=*/hour=*/*.parquet")
    assert len(written) == 2 and len(set(written)) == files and len(data) == files
    assert sum(pq.read_metadata(os.path.join(root, f)).num_rows for f in data) == files * piece.num_rows
    index = pq.read_table(os.path.join(root, INDEX_DIR)).to_pylist()
    assert sum(row["records"] for row in index if row["id_kind"] == "user_id") == files * piece.num_rows


@pytest.mark.parametrize("runs", [1, 2, 5, 40])
def test_a_batch_split_into_slices_holds_the_same_rows_per_partition_as_a_sorted_copy(runs):
    """The bounded writer cuts a batch made of a few event-time-ordered runs into slices (no copy);
    more runs than that take the sorted copy. Either way each partition gets exactly its rows, in
    the batch's order."""
    import numpy as np

    from beam_rtbf.archive.write import split_by_partition

    rng = np.random.default_rng(runs)
    times = np.concatenate([np.sort(rng.integers(0, 10 * 3_600_000, 500)) for _ in range(runs)])
    batch = pa.RecordBatch.from_pydict({"event_time_ms": times, "row": np.arange(len(times))})
    by_partition = {}
    for start, piece in split_by_partition(batch, 3_600_000, slices=True):
        by_partition.setdefault(start, []).extend(piece.column("row").to_pylist())
    copied = {start: piece.column("row").to_pylist() for start, piece in split_by_partition(batch, 3_600_000)}
    assert by_partition == copied
    assert sorted(r for rows in by_partition.values() for r in rows) == list(range(len(times)))
    for start, rows in by_partition.items():
        assert rows == sorted(rows) and all(start <= times[r] < start + 3_600_000 for r in rows)
