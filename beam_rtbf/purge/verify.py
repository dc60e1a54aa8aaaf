"""The receipt's proof: after every rewrite, scan every stored file for the purged subjects.

    rewrite results (a side input: waited for) --> ListStoredFiles (chunks of files) --> SpreadStoredFiles
        --> ScanStoredFiles (a side input) --> SummarizeVerification (one summary, a side input of the receipts)

The purge plan comes from the archive's subject index; this check does not trust
it. It lists the storage itself after the rewrites and reads every file there:

- every file under the archive root: partition files (``*.parquet``, the ones no
  index names included), index files (``_index/``), and leftovers of crashed runs
  (``.tmp-*`` temporaries) and anything else found there;
- every dead-letter file (``deadletter/*.jsonl``, temporaries included).

Parquet files are read by their identifier columns only (``user_id``, ``email``,
``device_id``; ``user_id`` in index files) and matched with vectorised ``is_in``
against the canonical identifiers of all requests of the run, in one pass for all
requests. A Parquet file whose footer holds the archive writer's identifier filter
(``archive/idfilter.py``: a Bloom filter over every value of those columns keyed as
``canonical_candidates`` keys them, bound to the file's row counts) is proven clean by
its footer alone when none of the run's identifiers may be in it; any other Parquet file (no filter,
a filter not bound to the file, or a possible match) is read. Every file is still
listed and opened: the proof is per file, never taken from the plan or the index. Dead letters follow the purge's own rule (``subjects.py``): the record's
id fields, raw tokens only for bytes that do not parse. Other files are matched by
raw tokens. A file that cannot be read leaves every request of the run unverified.

The matching code is separate from the rewrite's on purpose: a bug in one path is
caught by the other. Both use the same canonical identifier form.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Mapping, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.archive.idfilter import query_hashes, read_filter
from beam_rtbf.archive.write import INDEX_DIR, INDEX_ID_COLUMNS
from beam_rtbf.purge.subjects import MATCHED_BY_FIELD, MATCHED_BY_RAW_TOKEN, SubjectIdentifiers, canonical_id
from beam_rtbf.sinks.files import join

__all__ = [
    "StoredFile",
    "FileVerification",
    "VerificationSummary",
    "VerifyErasure",
    "list_stored_files",
    "verify_file",
    "summarize",
    "canonical_candidates",
    "VerifyIdentifiers",
    "METHOD",
    "requests_by_identifier",
    "verify_stored_files",
]

METHOD = (
    "after all rewrites, every file under the archive root (partitions, index, unindexed files, "
    "temporaries of crashed runs) and every dead-letter file was listed and read; identifier columns "
    "(user_id, email, device_id; user_id in index files) matched in canonical form, or, for a Parquet "
    "file whose footer holds the archive writer's identifier filter bound to its rows, proven absent "
    "by that filter (by_file_metadata); dead letters by their record's id fields, by raw tokens only "
    "when unparseable"
)
KINDS = ("archive", "index", "deadletter", "other")


@dataclasses.dataclass(frozen=True)
class StoredFile:
    kind: str  # "archive" | "index" | "deadletter" | "other"
    path: str
    size_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class FileVerification:
    """What one file holds of the run's subjects: records per request, and how they were matched."""

    file: StoredFile
    rows: int
    found: dict[str, int]  # request id -> records
    matched_by: dict[str, dict[str, int]]  # request id -> {"field"|"raw_token": records}
    error: str = ""
    seconds: float = 0.0
    by_metadata: bool = False  # proven clean by its footer's identifier filter, columns not read


@dataclasses.dataclass(frozen=True)
class VerificationSummary:
    """Every file's result folded into what the receipts need."""

    # archive_files, index_files, deadletter_files, other_files; rows (Parquet rows, non-empty lines
    # of dead-letter and other files) and bytes read
    scanned: dict[str, int]
    found: dict[str, int]  # request id -> records (every request of the run has a key)
    found_in: dict[str, list[dict]]  # request id -> [{"path", "kind", "records", "matched_by"}]
    unreadable: list[dict]  # [{"path", "kind", "reason"}]
    scan_s: float  # the files' scan times added up (workers run them in parallel)
    elapsed_s: float  # listing to summary, wall clock
    # of the scanned files, those proven clean by their footer's identifier filter: {"files", "rows"}
    by_file_metadata: dict[str, int] = dataclasses.field(default_factory=lambda: {"files": 0, "rows": 0})

    def for_request(self, request_id: str) -> dict:
        """The receipt's ``verification`` section (paths and counts only, no identifiers)."""
        found = self.found.get(request_id, 0)
        return {
            "scanned": dict(self.scanned),
            "by_file_metadata": dict(self.by_file_metadata),
            "found": found,
            "found_in": list(self.found_in.get(request_id, [])),
            "unreadable": list(self.unreadable),
            "method": METHOD,
            "passed": found == 0 and not self.unreadable,
        }

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- listing ---------------------------------------------------------------------------------


def _kind_under_archive(path: str) -> str:
    if not path.endswith(".parquet"):
        return "other"
    return "index" if f"/{INDEX_DIR}/" in path else "archive"


def list_stored_files(archive_dir: str, deadletter_dir: str) -> list[StoredFile]:
    """Every file under the archive root and every dead-letter file, as the storage lists them now."""
    files = [
        StoredFile(_kind_under_archive(m.path), m.path, m.size_in_bytes)
        for result in FileSystems.match([join(archive_dir, "**")])
        for m in result.metadata_list
    ]
    files += [
        StoredFile("deadletter", m.path, m.size_in_bytes)
        for result in FileSystems.match([join(deadletter_dir, "*.jsonl")])
        for m in result.metadata_list
    ]
    return sorted(set(files), key=lambda f: (f.kind, f.path))


# -- matching --------------------------------------------------------------------------------


def canonical_candidates(values: pa.Array | pa.ChunkedArray, lowered_ids: pa.Array) -> np.ndarray:
    """Rows whose canonical form may be one of the identifiers (a superset; confirm with canonical_id).

    For printable ASCII the canonical form is the value trimmed of spaces, possibly
    lower-cased (e-mail), so the value trimmed and lower-cased must be in the
    lower-cased identifiers; anything else (non-ASCII, control characters) is a
    candidate and goes to ``canonical_id`` itself.
    """
    printable = pc.fill_null(pc.ascii_is_printable(values), True)
    key = pc.ascii_trim_whitespace(pc.ascii_lower(values))
    hit = pc.fill_null(pc.is_in(key, value_set=lowered_ids), False)
    return (hit.to_numpy(zero_copy_only=False) | ~printable.to_numpy(zero_copy_only=False)).astype(bool)


class VerifyIdentifiers:
    """The run's canonical identifiers, ready for vectorised matching."""

    def __init__(self, id_requests: Mapping[str, Sequence[str]]) -> None:
        self.subjects = SubjectIdentifiers(id_requests)
        self.lowered = pa.array(sorted({i.lower() for i in self.subjects.requests_of}), pa.string())
        # The identifiers as identifier filters key them (lower-cased: the candidate rule below).
        self.hashes = query_hashes(self.subjects.requests_of)

    def table_found(self, table: pa.Table, columns: Sequence[str]) -> dict[str, int]:
        """Records per request in ``table`` (a record counts once per request, whatever matched)."""
        rows: dict[int, set[str]] = {}
        for name in columns:
            column = table.column(name)
            if column.null_count == len(column):
                continue
            for row in np.flatnonzero(canonical_candidates(column, self.lowered)):
                value = column[int(row)].as_py()
                requests = self.subjects.requests_of.get(canonical_id(value)) if value is not None else None
                if requests:
                    rows.setdefault(int(row), set()).update(requests)
        found: dict[str, int] = {}
        for requests in rows.values():
            for request_id in requests:
                found[request_id] = found.get(request_id, 0) + 1
        return found


def _read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as handle:
        return handle.read()


def _scan_parquet(file: StoredFile, ids: VerifyIdentifiers) -> tuple[int, dict[str, int], bool]:
    """(rows, records per request, whether the footer's identifier filter proved the file clean)."""
    wanted = ("user_id",) if file.kind == "index" else INDEX_ID_COLUMNS
    if "://" in file.path:
        source = pa.BufferReader(_read_bytes(file.path))
    else:  # local: let Arrow read the columns it needs, not the whole file
        source = file.path
    parquet = pq.ParquetFile(source)
    columns = [c for c in wanted if c in parquet.schema_arrow.names]
    rows = parquet.metadata.num_rows
    if not columns:
        return rows, {}, False
    id_filter, _ = read_filter(parquet.metadata, wanted)
    if id_filter is not None and not id_filter.may_contain(ids.hashes).any():
        return rows, {}, True
    table = parquet.read(columns=columns, use_threads=False)
    return rows, ids.table_found(table, columns), False


def _scan_lines(file: StoredFile, ids: VerifyIdentifiers) -> tuple[int, dict[str, int], dict[str, dict[str, int]]]:
    lines = [line for line in _read_bytes(file.path).split(b"\n") if line.strip()]
    found: dict[str, int] = {}
    matched_by: dict[str, dict[str, int]] = {}
    for line in lines:
        if file.kind == "deadletter":
            hits, how = ids.subjects.in_dead_letter(line)
        else:
            hits, how = ids.subjects.in_text(line.decode("utf-8", "replace")), MATCHED_BY_RAW_TOKEN
        for request_id in ids.subjects.requests_for(hits):
            found[request_id] = found.get(request_id, 0) + 1
            by = matched_by.setdefault(request_id, {})
            by[how] = by.get(how, 0) + 1
    return len(lines), found, matched_by


def verify_file(file: StoredFile, ids: VerifyIdentifiers) -> FileVerification:
    """Read one stored file and count the subjects' records in it; never raises for a bad file."""
    started = time.perf_counter()
    try:
        by_metadata = False
        if file.kind in ("archive", "index"):
            rows, found, by_metadata = _scan_parquet(file, ids)
            matched_by = {r: {MATCHED_BY_FIELD: n} for r, n in found.items()}
        else:
            rows, found, matched_by = _scan_lines(file, ids)
    except (pa.ArrowException, OSError, ValueError) as exc:
        if not FileSystems.exists(file.path):  # removed since the listing: it holds nothing
            return FileVerification(dataclasses.replace(file, size_bytes=0), 0, {}, {}, "", 0.0)
        kind = "Parquet" if file.kind in ("archive", "index") else "text"
        reason = f"{file.path}: not a readable {kind} file ({type(exc).__name__}: {exc})"
        return FileVerification(file, 0, {}, {}, reason, time.perf_counter() - started)
    return FileVerification(file, rows, found, matched_by, "", time.perf_counter() - started, by_metadata)


def summarize(results: Iterable[FileVerification], request_ids: Sequence[str], listed_at: float) -> VerificationSummary:
    scanned = {f"{kind}_files": 0 for kind in KINDS} | {"rows": 0, "bytes": 0}
    found = dict.fromkeys(request_ids, 0)
    found_in: dict[str, list[dict]] = {r: [] for r in request_ids}
    unreadable = []
    scan_s = 0.0
    by_metadata = {"files": 0, "rows": 0}
    for result in sorted(results, key=lambda r: (r.file.kind, r.file.path)):
        scan_s += result.seconds
        if result.by_metadata:
            by_metadata["files"] += 1
            by_metadata["rows"] += result.rows
        scanned[f"{result.file.kind}_files"] += 1
        scanned["rows"] += result.rows
        scanned["bytes"] += result.file.size_bytes
        if result.error:
            unreadable.append({"path": result.file.path, "kind": result.file.kind, "reason": result.error})
        for request_id, records in result.found.items():
            if request_id not in found:
                continue
            found[request_id] += records
            found_in[request_id].append(
                {
                    "path": result.file.path,
                    "kind": result.file.kind,
                    "records": records,
                    "matched_by": result.matched_by.get(request_id, {}),
                }
            )
    elapsed = max(0.0, time.time() - listed_at) if listed_at else 0.0
    return VerificationSummary(scanned, found, found_in, unreadable, round(scan_s, 3), round(elapsed, 3), by_metadata)


# -- Beam -----------------------------------------------------------------------------------


class _ListStoredFilesFn(beam.DoFn):
    def __init__(self, archive_dir: str, deadletter_dir: str) -> None:
        self._archive_dir = archive_dir
        self._deadletter_dir = deadletter_dir

    def process(self, unused, rewrites_done):
        del unused, rewrites_done  # only waited for: the side input is complete once every rewrite is
        listed_at = time.time()
        files = list_stored_files(self._archive_dir, self._deadletter_dir)
        # In chunks: most files are proven by their footer in well under a millisecond, less than what
        # moving one element through a Reshuffle costs; enough chunks remain to spread over the workers.
        size = chunk_size(len(files))
        for start in range(0, len(files), size):
            yield listed_at, files[start : start + size]


SCAN_CHUNKS = 32  # chunks of the listing (at least): what the scan can spread over
MAX_CHUNK_FILES = 64


def chunk_size(files: int) -> int:
    """Files per element of the verification's scan: ``SCAN_CHUNKS`` chunks, at most ``MAX_CHUNK_FILES`` each."""
    return max(1, min(MAX_CHUNK_FILES, -(-files // SCAN_CHUNKS)))


class _ScanStoredFileFn(beam.DoFn):
    def __init__(self, id_requests: Mapping[str, Sequence[str]]) -> None:
        self._id_requests = {k: tuple(v) for k, v in id_requests.items()}
        self._rows = Metrics.counter(rtbf_metrics.NAMESPACE, "verify_rows_scanned")
        self._found = Metrics.counter(rtbf_metrics.NAMESPACE, "verify_records_found")
        self._unreadable = Metrics.counter(rtbf_metrics.NAMESPACE, "verify_files_unreadable")

    def setup(self) -> None:
        self._ids = VerifyIdentifiers(self._id_requests)

    def process(self, element):
        listed_at, files = element
        results = [verify_file(file, self._ids) for file in files]
        for result in results:
            self._rows.inc(result.rows)
            self._found.inc(sum(result.found.values()))
            if result.error:
                self._unreadable.inc()
        yield listed_at, results


def _summarize(items: list, request_ids: Sequence[str]) -> VerificationSummary:
    """``items``: (listing time, results of a chunk of files) of every chunk."""
    listed_at = min((t for t, _ in items), default=0.0)
    return summarize([r for _, chunk in items for r in chunk], request_ids, listed_at)


def requests_by_identifier(subjects: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """request id -> identifiers, turned into identifier -> the requests naming it."""
    id_requests: dict[str, set[str]] = {}
    for request_id, identifiers in subjects.items():
        for identifier in identifiers:
            id_requests.setdefault(identifier, set()).add(request_id)
    return {k: tuple(sorted(v)) for k, v in id_requests.items()}


def verify_stored_files(
    archive_dir: str, deadletter_dir: str, subjects: Mapping[str, Sequence[str]]
) -> VerificationSummary:
    """The verification in one call (a small purge's one step): list the storage now, re-read every file."""
    listed_at = time.time()
    ids = VerifyIdentifiers(requests_by_identifier(subjects))
    results = [verify_file(f, ids) for f in list_stored_files(archive_dir, deadletter_dir)]
    return summarize(results, tuple(sorted(subjects)), listed_at)


class VerifyErasure(beam.PTransform):
    """Rewrite results -> one VerificationSummary: every stored file re-read once all rewrites are done."""

    def __init__(self, archive_dir: str, deadletter_dir: str, subjects: Mapping[str, Sequence[str]]) -> None:
        """``subjects``: request id -> every identifier the request names (user id first, then aliases)."""
        super().__init__()
        if not archive_dir or not deadletter_dir:
            raise ValueError("VerifyErasure needs the archive and dead-letter folders")
        self._archive_dir = archive_dir
        self._deadletter_dir = deadletter_dir
        self._request_ids = tuple(sorted(subjects))
        self._id_requests = requests_by_identifier(subjects)

    def expand(self, rewrites):
        # Side inputs, not global combiners: a side input is complete before its consumer starts, which
        # is the wait this needs, and the graph stays small (its fixed cost is paid on every runner).
        start = rewrites.pipeline | "StartVerification" >> beam.Create([None])
        scanned = (
            start
            | "ListStoredFiles"
            >> beam.ParDo(
                _ListStoredFilesFn(self._archive_dir, self._deadletter_dir),
                rewrites_done=beam.pvalue.AsIter(rewrites),
            )
            | "SpreadStoredFiles" >> beam.Reshuffle()
            | "ScanStoredFiles" >> beam.ParDo(_ScanStoredFileFn(self._id_requests))
        )
        return start | "SummarizeVerification" >> beam.Map(
            lambda _, items, request_ids: _summarize(items, request_ids),
            beam.pvalue.AsList(scanned),
            self._request_ids,
        )


def summary_json(summary: VerificationSummary) -> bytes:
    return json.dumps(summary.to_dict(), indent=2, sort_keys=True).encode()


__all__ += ["summary_json"]
