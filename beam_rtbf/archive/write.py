"""Write clean sessions to Parquet partitions by event time, plus a subject index.

    archive/dt=2026-01-01/hour=13/part-<id>.parquet     the sessions
    archive/_index/part-<id>.parquet                    user_id -> file, records, time range

(``part-<run_id>-<id>`` in bounded runs, staged until the run commits: ``sinks/ledger.py``.)
Index rows name files relative to the archive root (``dt=.../hour=.../part-<id>.parquet``),
so the archive can be read from any working directory and moved as a whole.

The index is what manifests (and the purge) use to find every file holding a
subject without scanning the archive. A flush's index rows are split into hash
buckets of at most ``INDEX_FILE_ROWS`` rows, each sorted by identifier in small row
groups and described in its footer (``index_footer.py``): a lookup reads footers and
the few row groups whose min/max hold the identifier. Every file (data and index)
carries an identifier filter in its footer (``idfilter.py``), which lets the purge's
verification prove a file holds none of a subject's identifiers without reading it.
Each file is written under a temporary name and renamed, so a crash never leaves a
half-written partition file.

With ``exactly_once`` (streaming on Flink with checkpoints, ``sinks/stable.py``) rows are
gathered per partition for ``flush_s``, written only once the checkpoint covering them
completed, and named by their content (``part-<digest>.parquet``, its index file likewise):
a job resumed from a checkpoint or savepoint rewrites the same files instead of adding copies.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.archive.idfilter import string_hashes, write_parquet
from beam_rtbf.archive.index_footer import bucket_of, index_footer_entry
from beam_rtbf.identifiers import canonical_array
from beam_rtbf.sinks.files import join, run_write_dir, unique_part, write_atomically
from beam_rtbf.sinks.stable import GatherForWrite, StableParDo, content_name, table_digest

__all__ = [
    "WriteArchive",
    "partition_path",
    "index_rows",
    "write_data_file",
    "write_data_parquet",
    "write_index_files",
    "write_index_file",
    "INDEX_DIR",
    "INDEX_SCHEMA",
    "INDEX_ID_COLUMNS",
    "DATA_DICTIONARY_COLUMNS",
]

INDEX_DIR = "_index"
# One row per (identifier, file): the user id, and each alias (email, device id) under its own
# ``id_kind``, so a request naming only an alias still finds every file holding that identifier.
INDEX_ID_COLUMNS = ("user_id", "email", "device_id")
INDEX_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("id_kind", pa.string()),
        ("path", pa.string()),
        ("records", pa.int64()),
        ("min_event_ms", pa.int64()),
        ("max_event_ms", pa.int64()),
    ]
)


def partition_path(start_ms: int, partition_s: int) -> str:
    """Hive-style folder for the partition starting at ``start_ms``."""
    t = dt.datetime.fromtimestamp(start_ms / 1000, dt.timezone.utc)
    path = f"dt={t:%Y-%m-%d}"
    if partition_s < 86_400:
        path += f"/hour={t:%H}"
    if partition_s < 3_600:
        path += f"/minute={t:%M}"
    if partition_s < 60:
        path += f"/second={t:%S}"
    return path


# Dictionary-encoded columns (few distinct values); the others (ids, times, seconds) are written plain.
DATA_DICTIONARY_COLUMNS = ("action", "action_type", "action_detail", "device_type")
INDEX_DICTIONARY_COLUMNS = ("id_kind", "path")
_CODED_PATH_SCHEMA = INDEX_SCHEMA.set(
    INDEX_SCHEMA.get_field_index("path"), pa.field("path", pa.dictionary(pa.int32(), pa.string()))
)
# A purge re-encodes only the row groups holding a subject and copies the others (``splice.py``):
# an hourly file of ~40 K sessions is 5 groups, and one subject's session in it touches one.
DATA_ROW_GROUP_ROWS = 8_192
INDEX_FILE_ROWS = 32_768  # an index file a purge rewrites stays small
INDEX_MAX_BUCKETS = 256
INDEX_ROW_GROUP_ROWS = 4_096  # a lookup reads one such group per index file of its bucket
_WRITE_THREADS = 2
_MAX_SORTED_RUNS = 16  # a batch in at most this many event-time-ordered runs is split into slices


def id_hashes(rows: pa.Table) -> np.ndarray:
    """Hashes of the canonical form of index rows' identifiers (one per row): they choose the bucket
    and the order of index rows."""
    return string_hashes(canonical_array(rows.column("user_id")))


def write_data_file(path: str, table: pa.Table) -> None:
    """An archive partition file, with its identifier filter."""
    write_atomically(path, lambda handle: write_data_parquet(handle, table))


def write_data_parquet(handle, table: pa.Table) -> None:
    """An archive partition's sessions in the archive's format (what a purge rewrites them in too)."""
    write_parquet(
        handle, table, INDEX_ID_COLUMNS, row_group_rows=DATA_ROW_GROUP_ROWS, dictionary_columns=DATA_DICTIONARY_COLUMNS
    )


def write_index_file(
    handle, rows: pa.Table, bucket: int, buckets: int, hashes: np.ndarray | None = None, sort: bool = True
) -> None:
    """One index bucket: small row groups whose hash ranges the footer keeps, and the identifier
    filter. ``sort``: in order of the identifiers' hashes (so a lookup reads one row group); a
    purge rewriting an older, unsorted index file keeps its order instead (a sort of a large
    file would cost more than the purge)."""
    if hashes is None:
        hashes = id_hashes(rows)
    if sort and len(hashes) > 1 and not bool(np.all(hashes[:-1] <= hashes[1:])):
        order = np.argsort(hashes, kind="stable")
        rows, hashes = rows.take(pa.array(order)), hashes[order]
    ranges = []
    if len(hashes):
        starts = np.arange(0, len(hashes), INDEX_ROW_GROUP_ROWS)
        lows, highs = np.minimum.reduceat(hashes, starts), np.maximum.reduceat(hashes, starts)
        ranges = list(zip(lows.tolist(), highs.tolist()))
    extra = index_footer_entry(rows, bucket, buckets, ranges)
    write_parquet(handle, rows, ("user_id",), INDEX_ROW_GROUP_ROWS, extra, INDEX_DICTIONARY_COLUMNS)


def write_index_files(
    directory: str,
    prefix: str,
    rows: pa.Table,
    hashes: np.ndarray | None = None,
    name: Callable[[int], str] | None = None,
) -> list[str]:
    """A flush's index rows as hash-bucket files under ``directory``; returns their paths.

    ``name``: a bucket's file name (exactly-once writers name files by content); else unique names.
    """
    if hashes is None:
        hashes = id_hashes(rows)
    buckets = max(1, min(INDEX_MAX_BUCKETS, -(-rows.num_rows // INDEX_FILE_ROWS)))
    of_row = bucket_of(hashes, buckets)
    order = np.lexsort((hashes, of_row))  # by bucket, then hash: one take, then a slice per bucket
    # A take from a flush's many chunks (one per partition file) was ~7x slower than from one.
    rows, hashes, of_row = (
        rows.unify_dictionaries().combine_chunks().take(pa.array(order)),
        hashes[order],
        of_row[order],
    )
    if pa.types.is_dictionary(rows.schema.field("path").type):  # stored as plain strings, as ever
        rows = rows.set_column(rows.schema.get_field_index("path"), "path", rows.column("path").cast(pa.string()))
    bounds = np.searchsorted(of_row, np.arange(buckets + 1))
    paths = []
    for bucket in range(buckets):
        lo, hi = int(bounds[bucket]), int(bounds[bucket + 1])
        if lo == hi and rows.num_rows:
            continue
        part, part_hashes = rows.slice(lo, hi - lo), hashes[lo:hi]
        path = join(directory, name(bucket) if name else unique_part(prefix, ".parquet"))
        write_atomically(path, lambda h, p=part, ph=part_hashes, b=bucket: write_index_file(h, p, b, buckets, ph))
        paths.append(path)
    return paths


def index_rows(part: pa.Table, path: str, coded_path: bool = False) -> pa.Table:
    """Index rows of one archive file (``path`` relative to the archive root): per identifier
    (user id and aliases), records and time range.

    ``coded_path``: the path column dictionary-coded (one value), for a flush that sorts many
    files' rows at once (``write_index_files``): ~60 bytes of path a row, moved in a random order,
    were most of that sort."""
    tables = []
    for column in INDEX_ID_COLUMNS:
        if column not in part.column_names or part.column(column).null_count == part.num_rows:
            continue
        keyed = pa.table({"id": part.column(column), "event_time_ms": part.column("event_time_ms")}).filter(
            pc.is_valid(part.column(column))
        )
        grouped = keyed.group_by("id", use_threads=False).aggregate(
            [("event_time_ms", "count"), ("event_time_ms", "min"), ("event_time_ms", "max")]
        )
        n = grouped.num_rows
        paths = (
            pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([path], pa.string()))
            if coded_path
            else pa.repeat(pa.scalar(path, pa.string()), n)
        )
        tables.append(
            pa.table(
                {
                    "user_id": grouped.column("id"),
                    "id_kind": pa.repeat(pa.scalar(column, pa.string()), n),
                    "path": paths,
                    "records": grouped.column("event_time_ms_count"),
                    "min_event_ms": grouped.column("event_time_ms_min"),
                    "max_event_ms": grouped.column("event_time_ms_max"),
                },
                schema=_CODED_PATH_SCHEMA if coded_path else INDEX_SCHEMA,
            )
        )
    if tables:
        return pa.concat_tables(tables)
    return (_CODED_PATH_SCHEMA if coded_path else INDEX_SCHEMA).empty_table()


class _WriteArchiveFn(beam.DoFn):
    """Buffers a bundle's rows per partition and writes one file per partition per flush.

    Bounded runs get one bundle per worker and stage, so a partition is a few
    large files; streaming bundles are small, so files appear within a bundle
    of the data. Buffers flush at ``max_buffer_rows``, bounding memory.
    """

    def __init__(
        self, directory: str, partition_s: int, max_buffer_rows: int = 2_000_000, run_id: str | None = None
    ) -> None:
        self._directory = directory
        # A bounded run writes under its staging folder; paths (and index rows) name where the driver publishes.
        self._write_dir = run_write_dir(directory, run_id)
        self._prefix = f"part-{run_id}" if run_id else "part"
        self._partition_ms = partition_s * 1000
        self._partition_s = partition_s
        self._max_buffer_rows = max_buffer_rows
        self._files = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.ARCHIVE_FILES)
        self._records = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.ARCHIVE_RECORDS)

    def start_bundle(self) -> None:
        self._pieces: dict[int, list[pa.Table]] = {}
        self._rows = 0
        self._last = None

    def process(self, batch: pa.RecordBatch, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        for start, piece in split_by_partition(batch, self._partition_ms, slices=True):
            self._pieces.setdefault(start, []).append(piece)
        self._rows += batch.num_rows
        self._last = (timestamp, window)
        if self._rows >= self._max_buffer_rows:
            for path in self._flush():
                yield WindowedValue(path, timestamp, (window,))

    def finish_bundle(self):
        if self._last is None:
            return
        timestamp, window = self._last
        for path in self._flush():
            yield WindowedValue(path, timestamp, (window,))

    def _flush(self) -> list[str]:
        paths, index_parts, hash_parts = [], [], []
        # Parquet encoding and compression release the GIL: the files are written on two threads
        # while this one builds their index rows (a flush of a day's 24 partitions: ~30 % less time).
        with ThreadPoolExecutor(_WRITE_THREADS, thread_name_prefix="archive") as pool:
            writes = []
            for start, pieces in sorted(self._pieces.items()):
                part = pa.concat_tables(pieces)
                relative = f"{partition_path(start, self._partition_s)}/{unique_part(self._prefix, '.parquet')}"
                writes.append(pool.submit(write_data_file, join(self._write_dir, relative), part))
                rows = index_rows(part, relative, coded_path=True)
                index_parts.append(rows)
                hash_parts.append(id_hashes(rows))  # choose the index buckets
                paths.append(join(self._directory, relative))
                self._records.inc(part.num_rows)
            for write in writes:
                write.result()  # the first failure is raised once every write has ended
                self._files.inc()
        if index_parts:
            # The index is written after the data, so an index entry never names a missing file.
            write_index_files(
                join(self._write_dir, INDEX_DIR),
                self._prefix,
                pa.concat_tables(index_parts),
                np.concatenate(hash_parts),
            )
        self._pieces, self._rows = {}, 0
        return paths


def split_by_partition(
    batch: pa.RecordBatch, partition_ms: int, slices: bool = False
) -> Iterator[tuple[int, pa.Table]]:
    """(partition start, the batch's rows in it) for each archive partition the batch touches.

    ``slices``: a batch in event-time order is cut into slices of itself (no copy), for pieces that
    stay in this process; pieces that travel (pickled) are copies, or they would carry the whole
    batch's buffers."""
    table = pa.Table.from_batches([batch])
    starts = (table.column("event_time_ms").to_numpy() // partition_ms) * partition_ms
    if slices and np.count_nonzero(starts[1:] < starts[:-1]) <= _MAX_SORTED_RUNS:
        # A few runs in event-time order (as logs mostly are): slices of each run, no copy.
        cuts = np.flatnonzero(starts[1:] != starts[:-1]) + 1
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(starts)]):
            yield int(starts[lo]), table.slice(lo, hi - lo)
        return
    order = np.argsort(starts, kind="stable")
    sorted_starts = starts[order]
    cuts = np.flatnonzero(np.diff(sorted_starts)) + 1
    for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(order)]):
        yield int(sorted_starts[lo]), table.take(pa.array(order[lo:hi]))


class _ByPartition:
    """``GatherForWrite``'s key function: one piece per partition, keyed (partition start, writer shard)."""

    def __init__(self, partition_s: int, shards: int) -> None:
        self._partition_ms = partition_s * 1000
        self._shards = shards
        self._next = 0

    def __call__(self, batch: pa.RecordBatch) -> Iterator[tuple[tuple[int, int], pa.Table]]:
        self._next = (self._next + 1) % self._shards  # spreads a busy partition over writers
        for start, piece in split_by_partition(batch, self._partition_ms):
            yield (start, self._next), piece


class _WriteGatheredFn(beam.DoFn):
    """One file per gathered element. ``content_names`` (exactly-once outputs): named by its
    content, so a replay after a restore rewrites the same file. Without checkpoints nothing is
    replayed, and unique names keep two panes that happen to hold the same rows (sessions without
    an event id, repeated) from landing on one name, where the second would replace the first."""

    def __init__(self, directory: str, partition_s: int, content_names: bool = True) -> None:
        self._directory = directory
        self._partition_s = partition_s
        self._content_names = content_names
        self._files = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.ARCHIVE_FILES)
        self._records = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.ARCHIVE_RECORDS)

    def process(self, element: tuple[tuple[int, int], list[pa.Table]]) -> Iterator[str]:
        (start, _), pieces = element
        pieces = list(pieces)
        if not pieces:  # a processing-time pane can fire with nothing new in it
            return
        part = pa.concat_tables(pieces)
        name = None
        if self._content_names:
            digest = table_digest(part, str(start))

            def name(bucket: int) -> str:
                """The data file's name for bucket 0, and -b<N> for the other buckets of a large flush."""
                return content_name("part", digest, f"-b{bucket}.parquet" if bucket else ".parquet")

        file_name = name(0) if name else unique_part("part", ".parquet")
        relative = f"{partition_path(start, self._partition_s)}/{file_name}"
        rows = index_rows(part, relative)
        hashes = id_hashes(rows)
        write_data_file(join(self._directory, relative), part)
        # The index files after the data file: an index entry never names a missing file.
        write_index_files(join(self._directory, INDEX_DIR), "part", rows, hashes, name=name)
        self._files.inc()
        self._records.inc(part.num_rows)
        yield join(self._directory, relative)


class WriteArchive(beam.PTransform):
    """Clean batches -> Parquet partition files (emits their paths) and subject-index files.

    With ``run_id`` (a bounded run under the run ledger) files are written under
    ``_staging/<run_id>/`` and named with the run id; the emitted paths and the index
    name the published places the driver renames them to when the run commits.
    With ``exactly_once`` files are written once per checkpoint under content names (module docstring).
    With ``flush_s`` (streaming) rows are gathered per partition for that long and written under
    content names too, checkpoint or not: a local streaming run flushed a small file per partition
    per bundle (~2 a second at 100 K sessions/s), and a manifest's lookup read one per file.
    """

    def __init__(
        self,
        directory: str,
        partition_s: int = 3600,
        run_id: str | None = None,
        exactly_once: bool = False,
        flush_s: int = 0,
        write_shards: int = 2,
    ) -> None:
        super().__init__()
        if partition_s < 1:
            raise ValueError("archive partition_s must be >= 1")
        self._directory = directory
        self._partition_s = partition_s
        self._run_id = run_id
        self._exactly_once = exactly_once
        self._flush_s = flush_s
        self._write_shards = write_shards

    def expand(self, clean):
        if self._exactly_once or self._flush_s:
            write = StableParDo if self._exactly_once else beam.ParDo
            return (
                clean
                | "GatherPartitions"
                >> GatherForWrite(_ByPartition(self._partition_s, self._write_shards), self._flush_s or 1)
                | "WritePartitions"
                >> write(_WriteGatheredFn(self._directory, self._partition_s, content_names=self._exactly_once))
            )
        return clean | "WritePartitions" >> beam.ParDo(
            _WriteArchiveFn(self._directory, self._partition_s, run_id=self._run_id)
        )
