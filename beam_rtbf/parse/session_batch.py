"""Parse raw session records into Arrow batches; every rejected record becomes a dead letter.

The fast path hands a whole chunk to pyarrow's JSON or CSV reader and validates
columns with vectorised compute. Only when that fails (a malformed line, a type
that changes mid-chunk, bad UTF-8, an oversize line) is the chunk re-read one
line at a time, so exact dead letters cost nothing on clean data.

Lines that could crash the native JSON reader (not a ``{...}`` object, or more
than 64 brackets: see ``parse.lines.native_json_safe``) never reach it; they
take the per-line parser, which refuses nesting deeper than 64 levels. CSV/TSV
columns are mapped by the file's header names (``RawBatch.columns``, or the
chunk's own first line when it is a header); without a header, the Airbnb layout.

Pure functions on bytes and Arrow, no Beam: the Beam step that calls them is
``beam_rtbf.parse.sessions.ParseSessions``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from beam_rtbf.identifiers import canonical_array
from beam_rtbf.parse.lines import (
    DEFAULT_MAX_RECORD_BYTES,
    line_bounds,
    load_json_object,
    native_json_safe,
    record_position,
)
from beam_rtbf.records import (
    AIRBNB_COLUMNS,
    ID_COLUMNS,
    MAX_TIME_MS,
    SESSION_SCHEMA,
    DeadLetter,
    RawBatch,
    csv_header,
    parse_time_ms,
)

__all__ = [
    "BAD_EVENT_TIME",
    "ParsedChunk",
    "parse_session_chunk",
    "parse_session_line",
    "validate_session_batch",
]

_STRING_FIELDS = ("user_id", "action", "action_type", "action_detail", "device_type", "event_id", "email", "device_id")
_JSON_SCHEMA = pa.schema(
    [pa.field(name, pa.string()) for name in _STRING_FIELDS] + [pa.field("secs_elapsed", pa.float64())]
)
_MAX_USER_ID_CHARS = 256
BAD_EVENT_TIME = "bad event_time: not RFC 3339 or epoch millis in [0, year 9999]"


class ParsedChunk:
    """What one chunk of raw input became: a batch of valid sessions and the dead letters."""

    __slots__ = ("batch", "dead_letters", "records_in")

    def __init__(self, batch: pa.RecordBatch, dead_letters: list[DeadLetter], records_in: int) -> None:
        self.batch = batch
        self.dead_letters = dead_letters
        self.records_in = records_in


def _empty_batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=SESSION_SCHEMA)


def _event_time_column(column: pa.Array | None, n: int, arrival_ms: int) -> tuple[pa.Array, np.ndarray]:
    """event_time as epoch millis, and a mask of rows whose time is bad."""
    if column is None:
        return pa.array(np.full(n, arrival_ms, dtype=np.int64)), np.zeros(n, dtype=bool)
    if pa.types.is_null(column.type):
        return pa.array(np.full(n, arrival_ms, dtype=np.int64)), np.zeros(n, dtype=bool)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        nulls = column.is_null().to_numpy(zero_copy_only=False)
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            bad = (~nulls) & ~((values >= 0) & (values <= MAX_TIME_MS))  # NaN and inf fail both
        values = np.where(nulls, arrival_ms, np.where(bad, 0, values))
        return pa.array(values.astype(np.int64)), bad
    if pa.types.is_timestamp(column.type):
        ms = column.cast(pa.timestamp("ms", tz=column.type.tz)).cast(pa.int64())
        return pc.fill_null(ms, arrival_ms), np.zeros(n, dtype=bool)
    # Strings: RFC 3339 or digits. A per-value parse is the honest fallback here.
    out = np.empty(n, dtype=np.int64)
    bad = np.zeros(n, dtype=bool)
    for i, value in enumerate(column.to_pylist()):
        if value is None:
            out[i] = arrival_ms
            continue
        try:
            out[i] = parse_time_ms(value)
        except ValueError:
            bad[i] = True
            out[i] = 0
    return pa.array(out), bad


def validate_session_batch(
    table: pa.Table | pa.RecordBatch, arrival_ms: int
) -> tuple[pa.RecordBatch, list[tuple[int, str]]]:
    """Normalise parsed columns to ``SESSION_SCHEMA``; return the valid rows and (row, reason) rejects."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    n = table.num_rows
    names = set(table.column_names)
    columns: dict[str, pa.Array] = {}
    for name in _STRING_FIELDS:
        if name in names:
            col = table.column(name).combine_chunks()
            if not pa.types.is_string(col.type):
                col = col.cast(pa.string()) if not pa.types.is_null(col.type) else pa.nulls(n, pa.string())
            columns[name] = col
        else:
            columns[name] = pa.nulls(n, pa.string())
    reasons: dict[int, str] = {}

    # One canonical identifier form (beam_rtbf.identifiers) before the filter, the archive and its index.
    for name in ID_COLUMNS:
        columns[name] = canonical_array(columns[name])
    for name in ID_COLUMNS[1:]:  # an alias that is empty once canonical is no alias
        columns[name] = pc.if_else(pc.equal(pc.utf8_length(columns[name]), 0), None, columns[name])
    user_id = columns["user_id"]
    missing = pc.fill_null(pc.equal(pc.utf8_length(user_id), 0), True).to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(missing):
        reasons.setdefault(int(i), "missing user_id")
    too_long = pc.fill_null(pc.greater(pc.utf8_length(user_id), _MAX_USER_ID_CHARS), False)
    for i in np.flatnonzero(too_long.to_numpy(zero_copy_only=False)):
        reasons.setdefault(int(i), f"user_id longer than {_MAX_USER_ID_CHARS} characters")

    if "event_time_ms" in names:
        event_time, bad_time = _event_time_column(table.column("event_time_ms").combine_chunks(), n, arrival_ms)
    else:
        raw_time = table.column("event_time").combine_chunks() if "event_time" in names else None
        event_time, bad_time = _event_time_column(raw_time, n, arrival_ms)
    for i in np.flatnonzero(bad_time):
        reasons.setdefault(int(i), BAD_EVENT_TIME)

    if "secs_elapsed" in names:
        secs = table.column("secs_elapsed").combine_chunks()
        if pa.types.is_null(secs.type):
            secs = pa.nulls(n, pa.float64())
        elif not pa.types.is_floating(secs.type) or secs.type != pa.float64():
            secs = secs.cast(pa.float64())
        values = secs.to_numpy(zero_copy_only=False)  # nulls become NaN here: mask them out
        present = ~secs.is_null().to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            negative = values < 0
        for i in np.flatnonzero(negative):
            reasons.setdefault(int(i), "negative secs_elapsed")
        for i in np.flatnonzero(present & ~np.isfinite(values)):
            reasons.setdefault(int(i), "non-finite secs_elapsed")
    else:
        secs = pa.nulls(n, pa.float64())

    batch = pa.RecordBatch.from_arrays(
        [
            user_id,
            event_time,
            columns["action"],
            columns["action_type"],
            columns["action_detail"],
            columns["device_type"],
            secs,
            columns["event_id"],
            columns["email"],
            columns["device_id"],
        ],
        schema=pa.schema([f.with_nullable(True) for f in SESSION_SCHEMA]),
    )
    if reasons:
        keep = np.ones(n, dtype=bool)
        keep[list(reasons)] = False
        batch = batch.filter(pa.array(keep))
    return batch.cast(SESSION_SCHEMA) if batch.num_rows else _empty_batch(), sorted(reasons.items())


# The JSON reader parses blocks in parallel: a chunk (~4 MB) read as one block used one core. A
# block must hold at least one whole line, so it grows with the longest line of the range.
JSON_BLOCK_BYTES = 1 << 20


def _fast_parse(raw: RawBatch, body: bytes, single_block: bool = False, longest_line: int = 0) -> pa.Table:
    if raw.fmt == "jsonl":
        block_size = len(body) + 1 if single_block else max(JSON_BLOCK_BYTES, 2 * longest_line + 2)
        table = pajson.read_json(
            io.BytesIO(body),
            read_options=pajson.ReadOptions(block_size=block_size, use_threads=not single_block),
            parse_options=pajson.ParseOptions(explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="infer"),
        )
        # event_time_ms is the parsed column's name, not an input field: ignore it as the per-line path does.
        if "event_time_ms" in table.column_names:
            table = table.drop_columns(["event_time_ms"])
        return table
    delimiter = "\t" if raw.fmt == "tsv" else ","
    columns = raw.columns or AIRBNB_COLUMNS
    return pacsv.read_csv(
        io.BytesIO(body),
        read_options=pacsv.ReadOptions(column_names=list(columns), use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.float64() if name == "secs_elapsed" else pa.string() for name in columns},
            strings_can_be_null=True,
            null_values=[""],
        ),
    )


def parse_session_line(raw: RawBatch, line: bytes) -> dict[str, Any]:
    """One record by hand, for the slow path; ValueError with the reason on bad input."""
    if raw.fmt == "jsonl":
        obj = load_json_object(line)
    else:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"bad UTF-8 at byte {exc.start}") from exc
        columns = raw.columns or AIRBNB_COLUMNS
        delimiter = "\t" if raw.fmt == "tsv" else ","
        text = text.rstrip("\r")
        if '"' in text:  # quoted fields: the csv module unquotes and keeps quoted delimiters
            try:
                fields = next(csv.reader([text], delimiter=delimiter, strict=True))
            except csv.Error as exc:
                raise ValueError(f"malformed record: {exc}") from exc
        else:
            fields = text.split(delimiter)
        if len(fields) != len(columns):
            raise ValueError(f"malformed record: {len(fields)} fields, expected {len(columns)}")
        obj = {name: (value if value != "" else None) for name, value in zip(columns, fields)}
    row: dict[str, Any] = {}
    for name in _STRING_FIELDS:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            if name == "user_id" and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            else:
                raise ValueError(f"{name} is not a string")
        if value is not None and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate escape (\ud800): not text, and Arrow refuses it
                raise ValueError(f"{name} has a lone surrogate at index {exc.start}") from exc
        row[name] = value
    secs = obj.get("secs_elapsed")
    if secs is not None:
        if isinstance(secs, bool):
            raise ValueError("non-numeric secs_elapsed")
        if isinstance(secs, str):
            try:
                secs = float(secs)
            except ValueError as exc:
                raise ValueError(f"non-numeric secs_elapsed {secs!r}") from exc
        if not isinstance(secs, (int, float)):
            raise ValueError("non-numeric secs_elapsed")
    row["secs_elapsed"] = float(secs) if secs is not None else None
    event_time = obj.get("event_time")
    if event_time is not None:
        try:
            row["event_time_ms"] = parse_time_ms(event_time)
        except ValueError as exc:
            raise ValueError(BAD_EVENT_TIME) from exc
    else:
        row["event_time_ms"] = None
    return row


def _slow_parse(
    raw: RawBatch, data: bytes, starts: np.ndarray, ends: np.ndarray, first_line: int, max_record_bytes: int
) -> ParsedChunk:
    rows: list[dict[str, Any]] = []
    row_lines: list[int] = []
    dead: list[DeadLetter] = []
    records_in = 0
    for index in range(first_line, len(starts)):
        start, end = int(starts[index]), int(ends[index])
        line = data[start:end]
        if not line.strip():
            continue
        records_in += 1
        if end - start > max_record_bytes:
            dead.append(
                DeadLetter(
                    "sessions",
                    raw.source,
                    record_position(raw, index, start),
                    f"oversize record: {end - start} bytes > {max_record_bytes}",
                    line[:1024],
                )
            )
            continue
        try:
            rows.append(parse_session_line(raw, line))
            row_lines.append(index)
        except ValueError as exc:
            dead.append(DeadLetter("sessions", raw.source, record_position(raw, index, start), str(exc), line))
    if not rows:
        return ParsedChunk(_empty_batch(), dead, records_in)
    arrival = raw.arrival_ms
    for row in rows:
        if row["event_time_ms"] is None:
            row["event_time_ms"] = arrival
    table = pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in SESSION_SCHEMA]))
    batch, rejects = validate_session_batch(table, arrival)
    for row_index, reason in rejects:
        index = row_lines[row_index]
        start, end = int(starts[index]), int(ends[index])
        dead.append(DeadLetter("sessions", raw.source, record_position(raw, index, start), reason, data[start:end]))
    return ParsedChunk(batch, dead, records_in)


_MIN_FAST_LINES = 64


_ROW_HINT = re.compile(r"in row (\d+)")
_RETRY_PIECE_LINES = 4096


def _fast_range(
    raw: RawBatch,
    data: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    lo: int,
    hi: int,
    max_record_bytes: int,
    out: list[ParsedChunk],
    retry: bool = False,
) -> None:
    """Parse lines [lo, hi) with the vectorised reader, stepping around lines it cannot take.

    When the reader fails it names the row ("... in row N"): the rows before it
    are re-read vectorised, that one line goes to the per-line parser, and the
    rest continues. Without a usable hint the range is halved. A chunk with a few
    bad lines among 100K good ones so costs a few vectorised passes, not a
    per-line Python parse of the chunk.
    """
    while lo < hi:
        if hi - lo < _MIN_FAST_LINES:
            out.append(_slow_parse(raw, data, starts[:hi], ends[:hi], lo, max_record_bytes))
            return
        body = data[int(starts[lo]) : int(ends[hi - 1]) + 1]
        hint = None
        try:
            # Retries parse as one block, so the row in an error message counts from ``lo``.
            longest = int((ends[lo:hi] - starts[lo:hi]).max()) + 1
            table = _fast_parse(raw, body, single_block=retry, longest_line=longest)
            # The JSON reader passes invalid UTF-8 inside strings through; catch it here.
            table.validate(full=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError, ValueError) as exc:
            table = None
            match = _ROW_HINT.search(str(exc)) if retry else None
            hint = int(match.group(1)) if match else None
        if table is not None and table.num_rows == hi - lo:
            batch, rejects = validate_session_batch(table, raw.arrival_ms)
            dead = []
            for row_index, reason in rejects:
                index = lo + row_index
                start, end = int(starts[index]), int(ends[index])
                dead.append(
                    DeadLetter("sessions", raw.source, record_position(raw, index, start), reason, data[start:end])
                )
            out.append(ParsedChunk(batch, dead, hi - lo))
            return
        if (
            not retry
            and raw.fmt != "jsonl"
            and _split_off_bad_field_counts(raw, data, starts, ends, lo, hi, max_record_bytes, out)
        ):
            return
        if not retry:
            # Retry in pieces, so each bad line costs a re-read of its piece only.
            for piece_lo in range(lo, hi, _RETRY_PIECE_LINES):
                piece_hi = min(hi, piece_lo + _RETRY_PIECE_LINES)
                _fast_range(raw, data, starts, ends, piece_lo, piece_hi, max_record_bytes, out, retry=True)
            return
        if hint is not None and 0 <= hint < hi - lo:
            bad = lo + hint
            if bad > lo:
                _fast_range(raw, data, starts, ends, lo, bad, max_record_bytes, out, retry=True)
            out.append(_slow_parse(raw, data, starts[: bad + 1], ends[: bad + 1], bad, max_record_bytes))
            lo = bad + 1
            continue
        mid = (lo + hi) // 2
        _fast_range(raw, data, starts, ends, lo, mid, max_record_bytes, out, retry=True)
        lo = mid


def _split_off_bad_field_counts(
    raw: RawBatch,
    data: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    lo: int,
    hi: int,
    max_record_bytes: int,
    out: list[ParsedChunk],
) -> bool:
    """After a CSV run failed: send lines with the wrong number of delimiters to the per-line
    parser and re-read the runs between them vectorised (the CSV reader's errors name no row,
    so without this each such line costs a bisection). False if every line has the right count."""
    delimiter = ord("\t" if raw.fmt == "tsv" else ",")
    expected = len(raw.columns or AIRBNB_COLUMNS) - 1
    first, last = int(starts[lo]), int(ends[hi - 1])
    marks = np.frombuffer(data, dtype=np.uint8, count=last - first, offset=first) == delimiter
    counts = np.add.reduceat(marks, starts[lo:hi] - first, dtype=np.int64)
    bad = counts != expected
    if not bad.any():
        return False
    cursor = lo
    for index in (np.flatnonzero(bad) + lo).tolist():
        if cursor < index:
            _fast_range(raw, data, starts, ends, cursor, index, max_record_bytes, out, retry=True)
        out.append(_slow_parse(raw, data, starts[: index + 1], ends[: index + 1], index, max_record_bytes))
        cursor = index + 1
    if cursor < hi:
        _fast_range(raw, data, starts, ends, cursor, hi, max_record_bytes, out, retry=True)
    return True


def parse_session_chunk(raw: RawBatch, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> ParsedChunk:
    """Parse one chunk; ``records_in == batch.num_rows + len(dead_letters)`` always holds."""
    if raw.fmt not in ("jsonl", "csv", "tsv"):
        raise ValueError(f"unknown session format {raw.fmt!r}")
    if raw.error is not None:
        columns = raw.columns if raw.fmt != "jsonl" else None
        letter = DeadLetter("sessions", raw.source, record_position(raw, 0, 0), raw.error, raw.data, columns)
        return ParsedChunk(_empty_batch(), [letter], 1)
    data = raw.data
    starts, ends = line_bounds(data)
    first_line = 0
    if raw.fmt != "jsonl" and raw.has_header and len(starts):
        header = csv_header(data[: ends[0]], "\t" if raw.fmt == "tsv" else ",")
        if header is not None:
            first_line = 1
            raw = dataclasses.replace(raw, columns=header)
    if first_line >= len(starts):
        return ParsedChunk(_empty_batch(), [], 0)
    # Runs of lines the vectorised reader can take: non-empty and not oversize. For
    # CSV, a quote may hide a delimiter, so quoted lines go line by line (the rest of
    # the chunk stays vectorised). For JSON, only lines the native reader cannot
    # crash on (see native_json_safe).
    eligible = (ends - starts > 0) & (ends - starts <= max_record_bytes)
    eligible[:first_line] = False
    if raw.fmt == "jsonl":
        eligible &= native_json_safe(data, starts, ends)
    elif b'"' in data:
        quotes = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord('"'))
        eligible[np.searchsorted(starts, quotes, side="right") - 1] = False
    pieces: list[ParsedChunk] = []
    edges = np.flatnonzero(np.diff(np.concatenate(([False], eligible, [False])).astype(np.int8)))
    cursor = first_line
    for run_start, run_end in zip(edges[0::2].tolist(), edges[1::2].tolist()):
        if cursor < run_start:
            pieces.append(_slow_parse(raw, data, starts[:run_start], ends[:run_start], cursor, max_record_bytes))
        _fast_range(raw, data, starts, ends, run_start, run_end, max_record_bytes, pieces)
        cursor = run_end
    if cursor < len(starts):
        pieces.append(_slow_parse(raw, data, starts, ends, cursor, max_record_bytes))
    batches = [p.batch for p in pieces if p.batch.num_rows]
    batch = (
        batches[0]
        if len(batches) == 1
        else pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
        if batches
        else _empty_batch()
    )
    dead = [letter for p in pieces for letter in p.dead_letters]
    if raw.fmt != "jsonl" and raw.columns is not None:  # the purge must read the line by its header's names
        dead = [dataclasses.replace(letter, columns=raw.columns) for letter in dead]
    return ParsedChunk(batch, dead, sum(p.records_in for p in pieces))
