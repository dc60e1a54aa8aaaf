"""parse/session_batch.py: raw chunks -> valid Arrow sessions + exact dead letters.

Every test checks conservation: ``records_in == batch.num_rows + len(dead_letters)``.
"Small" chunks (< 64 lines) take the per-line path; "large" chunks take the
vectorised reader and step around bad lines, and must give the same answer.
"""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

import beam_rtbf.parse.session_batch as session_batch
from beam_rtbf.parse.lines import DEFAULT_MAX_RECORD_BYTES
from beam_rtbf.parse.session_batch import BAD_EVENT_TIME, ParsedChunk, parse_session_chunk, validate_session_batch
from beam_rtbf.records import AIRBNB_COLUMNS, SESSION_SCHEMA, RawBatch

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
ARRIVAL = 1_800_000_000_000
CSV_HEADER = ",".join(AIRBNB_COLUMNS).encode()


def _row(user_id, event_time_ms, **fields):
    row = dict.fromkeys(SESSION_SCHEMA.names)
    row.update(user_id=user_id, event_time_ms=event_time_ms, **fields)
    return row


def _data(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _offsets(lines: list[bytes], first_offset: int = 0) -> list[int]:
    out, offset = [], first_offset
    for line in lines:
        out.append(offset)
        offset += len(line) + 1
    return out


def _parse(lines: list[bytes], fmt: str = "jsonl", source: str = "src", first_offset: int = 0, **kw) -> ParsedChunk:
    max_record_bytes = kw.pop("max_record_bytes", DEFAULT_MAX_RECORD_BYTES)
    raw = RawBatch(source, fmt, _data(lines), first_offset, arrival_ms=kw.pop("arrival_ms", ARRIVAL), **kw)
    parsed = parse_session_chunk(raw, max_record_bytes)
    _assert_conserved(parsed)
    return parsed


def _assert_conserved(parsed: ParsedChunk) -> None:
    assert parsed.records_in == parsed.batch.num_rows + len(parsed.dead_letters)
    assert parsed.batch.schema == SESSION_SCHEMA


def _letters(parsed: ParsedChunk) -> list[tuple[str, str, str, bytes]]:
    return sorted((d.stream, d.position, d.reason, d.raw) for d in parsed.dead_letters)


def _good(i: int) -> bytes:
    return (
        b'{"user_id":"g%d","event_time":%d,"action":"show","action_type":"view","device_type":"iPhone","secs_elapsed":%d.5}'
        % (
            i,
            T0 + i,
            i % 100,
        )
    )


def _good_row(i: int) -> dict:
    return _row(f"g{i}", T0 + i, action="show", action_type="view", device_type="iPhone", secs_elapsed=(i % 100) + 0.5)


# --- clean input -------------------------------------------------------------------------------


def test_clean_jsonl_exact_rows():
    lines = [
        b'{"user_id":"u1","event_time":1767225600000,"action":"show","action_type":"view",'
        b'"action_detail":"p3","device_type":"iPhone","secs_elapsed":12.5,"event_id":"e1"}',
        b'{"user_id":"u2","event_time":"2026-01-01T02:00:00+02:00","email":"u2@example.com","device_id":"d2"}',
        b'{"user_id":"u3","secs_elapsed":0}',
        b'{"user_id":"  u4  ","event_time":"2026-01-01T00:00:01.250Z","extra":{"nested":[1,2]}}',
        b'{"user_id":"u5","event_time":"1767225600007","secs_elapsed":"3.25"}',
        b'{"user_id":123,"event_time":null,"secs_elapsed":null}',
    ]
    parsed = _parse(lines)
    assert parsed.records_in == 6 and parsed.dead_letters == []
    assert parsed.batch.to_pylist() == [
        _row(
            "u1",
            T0,
            action="show",
            action_type="view",
            action_detail="p3",
            device_type="iPhone",
            secs_elapsed=12.5,
            event_id="e1",
        ),
        _row("u2", T0, email="u2@example.com", device_id="d2"),
        _row("u3", ARRIVAL, secs_elapsed=0.0),  # no event_time: the arrival time
        _row("u4", T0 + 1250),  # user id trimmed
        _row("u5", T0 + 7, secs_elapsed=3.25),
        _row("123", ARRIVAL),  # integer user ids become strings
    ]


def test_clean_large_chunk_with_mixed_time_types_matches_per_line():
    lines = [
        _good(i) if i % 3 else b'{"user_id":"g%d","event_time":"2026-01-01T00:00:00.%03dZ"}' % (i, i)
        for i in range(300)
    ]
    parsed = _parse(lines)
    expected = [_good_row(i) if i % 3 else _row(f"g{i}", T0 + i) for i in range(300)]
    assert parsed.batch.to_pylist() == expected
    assert parsed.records_in == 300 and parsed.dead_letters == []


def test_empty_and_blank_only_chunks():
    for data in (b"", b"\n", b"\n\n  \n\r\n\t\n"):
        parsed = parse_session_chunk(RawBatch("src", "jsonl", data))
        _assert_conserved(parsed)
        assert (parsed.records_in, parsed.batch.num_rows, parsed.dead_letters) == (0, 0, [])


def test_last_line_without_newline_is_parsed():
    parsed = parse_session_chunk(
        RawBatch("src", "jsonl", b'{"user_id":"a","event_time":1}\n{"user_id":"b","event_time":2}')
    )
    _assert_conserved(parsed)
    assert parsed.batch.to_pylist() == [_row("a", 1), _row("b", 2)]


# --- bad records -----------------------------------------------------------------------------------

BAD_CORPUS = [
    pytest.param(
        b'{"user_id": "u1", "secs_elapsed": ', "malformed JSON: Expecting value at column 35", id="truncated-json"
    ),
    pytest.param(
        b'{"user_id": "u1",, }',
        "malformed JSON: Expecting property name enclosed in double quotes at column 18",
        id="bad-json",
    ),
    pytest.param(b'{"action": "show", "secs_elapsed": 3.0}', "missing user_id", id="missing-user_id"),
    pytest.param(b'{"user_id": ""}', "missing user_id", id="empty-user_id"),
    pytest.param(b'{"user_id": "  \\t "}', "missing user_id", id="whitespace-user_id"),
    pytest.param(b'{"user_id": null}', "missing user_id", id="null-user_id"),
    pytest.param(b'{"user_id": 1.5}', "user_id is not a string", id="float-user_id"),
    pytest.param(b'{"user_id": true}', "user_id is not a string", id="bool-user_id"),
    pytest.param(b'{"user_id": "' + b"x" * 257 + b'"}', "user_id longer than 256 characters", id="long-user_id"),
    pytest.param(b'{"user_id": "u", "action": {"a": 1}}', "action is not a string", id="object-action"),
    pytest.param(
        b'{"user_id": "u2", "event_time": "not-a-time"}',
        BAD_EVENT_TIME,
        id="bad-event_time",
    ),
    pytest.param(b'{"user_id": "u2", "event_time": true}', BAD_EVENT_TIME, id="bool-event_time"),
    pytest.param(b'{"user_id": "u3", "secs_elapsed": -5}', "negative secs_elapsed", id="negative-secs"),
    pytest.param(b'{"user_id": "u3", "secs_elapsed": -0.25}', "negative secs_elapsed", id="negative-float-secs"),
    pytest.param(b'{"user_id": "u4", "secs_elapsed": "fast"}', "non-numeric secs_elapsed 'fast'", id="string-secs"),
    pytest.param(b'{"user_id": "u4", "secs_elapsed": false}', "non-numeric secs_elapsed", id="bool-secs"),
    pytest.param(b'{"user_id": "u4", "secs_elapsed": [1]}', "non-numeric secs_elapsed", id="list-secs"),
    pytest.param(b'{"user_id": "u4", "secs_elapsed": 1e999}', "non-finite secs_elapsed", id="infinite-secs"),
    pytest.param(b'{"user_id": "u5\xff\xfe", "action": "show"}', "bad UTF-8 at byte 15", id="bad-utf8"),
    pytest.param(b'{"user_id": "u5", "action": "sh\xc3"}', "bad UTF-8 at byte 31", id="bad-utf8-truncated"),
    pytest.param(b"[1, 2, 3]", "malformed record: JSON value is not an object", id="json-array"),
    pytest.param(b'"just a string"', "malformed record: JSON value is not an object", id="json-string"),
    pytest.param(b"42", "malformed record: JSON value is not an object", id="json-number"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_CORPUS)
@pytest.mark.parametrize("size", ["small", "large"])
def test_bad_record_becomes_exact_dead_letter(bad, reason, size):
    n_good = 4 if size == "small" else 300
    lines = [_good(i) for i in range(n_good)]
    lines.insert(n_good // 2, bad)
    first_offset = 1000
    parsed = _parse(lines, source="f.jsonl", first_offset=first_offset)
    position = f"f.jsonl@{_offsets(lines, first_offset)[n_good // 2]}"
    assert _letters(parsed) == [("sessions", position, reason, bad)]
    assert parsed.records_in == n_good + 1
    assert parsed.batch.to_pylist() == [_good_row(i) for i in range(n_good)]


def test_bad_utf8_raw_is_kept_as_the_original_bytes():
    bad = b'{"user_id": "\xff"}'
    parsed = _parse([bad])
    (letter,) = parsed.dead_letters
    assert letter.raw == bad and isinstance(letter.raw, bytes)
    assert '"raw_base64": "eyJ1c2VyX2lkIjogIv8ifQ=="' in letter.to_json()


def test_every_bad_kind_in_one_small_chunk_with_blank_lines():
    lines = [
        b'{"user_id":"ok1","event_time":5}',
        b"",
        b'{"user_id": "u1", "secs_elapsed": ',
        b"   ",
        b'{"action": "show"}',
        b'{"user_id": "u3", "secs_elapsed": -5}',
        b"\r",
        b'{"user_id": "u4", "secs_elapsed": "fast"}',
        b'{"user_id": "u5\xff\xfe"}',
        b"[1, 2, 3]",
        b'{"user_id":"ok2"}',
    ]
    parsed = _parse(lines, source="s3://b/k", first_offset=7)
    assert parsed.records_in == 8  # three blank lines are not records
    assert parsed.batch.to_pylist() == [_row("ok1", 5), _row("ok2", ARRIVAL)]
    off = _offsets(lines, 7)
    assert off[2] == 41 and off[4] == 80  # blank lines still move the byte offsets
    assert _letters(parsed) == sorted(
        [
            ("sessions", f"s3://b/k@{off[2]}", "malformed JSON: Expecting value at column 35", lines[2]),
            ("sessions", f"s3://b/k@{off[4]}", "missing user_id", lines[4]),
            ("sessions", f"s3://b/k@{off[5]}", "negative secs_elapsed", lines[5]),
            ("sessions", f"s3://b/k@{off[7]}", "non-numeric secs_elapsed 'fast'", lines[7]),
            ("sessions", f"s3://b/k@{off[8]}", "bad UTF-8 at byte 15", lines[8]),
            ("sessions", f"s3://b/k@{off[9]}", "malformed record: JSON value is not an object", lines[9]),
        ]
    )


def test_hand_computed_positions():
    data = b'{"user_id":"a"}\n\n[1]\n{"user_id":""}\n'
    parsed = parse_session_chunk(RawBatch("f", "jsonl", data, first_offset=100, arrival_ms=1))
    _assert_conserved(parsed)
    assert [(d.position, d.reason) for d in sorted(parsed.dead_letters, key=lambda d: d.position)] == [
        ("f@117", "malformed record: JSON value is not an object"),
        ("f@121", "missing user_id"),
    ]
    assert parsed.records_in == 3


@pytest.mark.parametrize("size", ["small", "large"])
def test_oversize_line_is_dead_lettered_with_truncated_raw(size):
    n_good = 3 if size == "small" else 200
    big = b'{"user_id":"big","pad":"' + b"y" * 3000 + b'"}'
    lines = [_good(i) for i in range(n_good)]
    lines.insert(1, big)
    parsed = _parse(lines, max_record_bytes=2048)
    assert _letters(parsed) == [
        ("sessions", f"src@{_offsets(lines)[1]}", f"oversize record: {len(big)} bytes > 2048", big[:1024])
    ]
    assert parsed.batch.num_rows == n_good


def test_line_exactly_max_record_bytes_is_accepted():
    line = b'{"user_id":"u","pad":"' + b"z" * 78 + b'"}'
    assert len(line) == 102
    assert _parse([line], max_record_bytes=102).batch.num_rows == 1
    parsed = _parse([line], max_record_bytes=101)
    assert [d.reason for d in parsed.dead_letters] == ["oversize record: 102 bytes > 101"]


# --- large chunks: the vectorised path ----------------------------------------------------------


def test_large_chunk_with_few_bad_lines(monkeypatch):
    per_line_calls = []
    real_parse_line = session_batch.parse_session_line

    def counting_parse_line(raw, line):
        per_line_calls.append(line)
        return real_parse_line(raw, line)

    monkeypatch.setattr(session_batch, "parse_session_line", counting_parse_line)
    n = 20_000
    lines = [_good(i) for i in range(n)]
    bad = {
        17: (b'{"user_id": "u1", "secs_elapsed": ', "malformed JSON: Expecting value at column 35"),
        4099: (b'{"action":"x"}', "missing user_id"),
        9000: (b"[1]", "malformed record: JSON value is not an object"),
        15000: (b'{"user_id":"a","secs_elapsed":"fast"}', "non-numeric secs_elapsed 'fast'"),
        19999: (b'{"user_id":"\xff"}', "bad UTF-8 at byte 12"),
    }
    for index, (line, _) in bad.items():
        lines[index] = line
    parsed = _parse(lines, source="big.jsonl", first_offset=5)
    offsets = _offsets(lines, 5)
    assert parsed.records_in == n
    assert parsed.batch.num_rows == n - 5
    assert _letters(parsed) == sorted(
        ("sessions", f"big.jsonl@{offsets[i]}", reason, line) for i, (line, reason) in bad.items()
    )
    assert parsed.batch.column("user_id").to_pylist() == [f"g{i}" for i in range(n) if i not in bad]
    assert parsed.batch.column("event_time_ms").to_pylist() == [T0 + i for i in range(n) if i not in bad]
    # The bad lines cost a few small per-line passes, not a per-line parse of the chunk.
    assert len(per_line_calls) < 1_000


@pytest.mark.parametrize("long_detail", [0, 40_000])
def test_chunk_of_many_json_blocks_is_parsed_vectorised_in_order(monkeypatch, long_detail):
    """The JSON reader parses a chunk in blocks (on several threads); a block grows to hold the
    longest line. Rows come out in line order, none on the per-line path."""
    per_line_calls = []
    real_parse_line = session_batch.parse_session_line
    monkeypatch.setattr(
        session_batch, "parse_session_line", lambda raw, line: per_line_calls.append(line) or real_parse_line(raw, line)
    )
    monkeypatch.setattr(session_batch, "JSON_BLOCK_BYTES", 16 * 1024)  # ~120 lines a block: many blocks
    reads = []
    real_fast_parse = session_batch._fast_parse
    monkeypatch.setattr(session_batch, "_fast_parse", lambda *a, **kw: reads.append(kw) or real_fast_parse(*a, **kw))
    n = 30_000
    lines = [_good(i) for i in range(n)]
    if long_detail:  # lines longer than a block: the block grows, the chunk stays on the fast path
        for i in (5, 12_345, n - 1):
            lines[i] = lines[i][:-1] + b',"action_detail":"' + b"d" * long_detail + b'"}'
    parsed = _parse(lines, max_record_bytes=DEFAULT_MAX_RECORD_BYTES)
    assert per_line_calls == []
    assert len(reads) == 1  # one read of the chunk: no block too small for a line, no retry
    assert parsed.dead_letters == []
    assert parsed.batch.column("user_id").to_pylist() == [f"g{i}" for i in range(n)]
    assert parsed.batch.column("event_time_ms").to_pylist() == [T0 + i for i in range(n)]
    details = parsed.batch.column("action_detail").to_pylist()
    assert [i for i, d in enumerate(details) if d] == ([5, 12_345, n - 1] if long_detail else [])


def _oracle(lines: list[bytes], source: str, first_offset: int, max_record_bytes: int):
    """Each line parsed alone (always the per-line path): what the whole chunk must give."""
    rows, letters, records_in = [], [], 0
    for line, offset in zip(lines, _offsets(lines, first_offset)):
        one = parse_session_chunk(RawBatch(source, "jsonl", line + b"\n", offset, None, ARRIVAL), max_record_bytes)
        rows += one.batch.to_pylist()
        letters += [(d.stream, d.position, d.reason, d.raw) for d in one.dead_letters]
        records_in += one.records_in
    return rows, sorted(letters), records_in


ODD_LINES = [
    b'{"user_id": "u1", "secs_elapsed": ',
    b'{"action": "show", "secs_elapsed": 3.0}',
    b'{"user_id": "u2", "event_time": "not-a-time"}',
    b'{"user_id": "u3", "secs_elapsed": -5}',
    b'{"user_id": "u4", "secs_elapsed": "fast"}',
    b'{"user_id": "u5\xff\xfe", "action": "show"}',
    b"[1, 2, 3]",
    b'{"user_id":"s","event_time":"2026-01-01T00:00:00Z"}',
    b'{"user_id":123}',
    b"   ",
    b"",
    b'{"user_id":"u","action":{"a":1}}',
    b'{"user_id":"' + b"x" * 300 + b'"}',
    b'{"user_id":"big","pad":"' + b"y" * 5000 + b'"}',
    b'{"user_id":"n","secs_elapsed":"7"}',
]


@pytest.mark.parametrize("seed", range(6))
def test_large_chunk_equals_line_by_line(seed):
    rng = random.Random(seed)
    n = rng.choice([70, 300, 1500])
    lines = [_good(i) for i in range(n)]
    for _ in range(rng.randint(1, 10)):
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(ODD_LINES))
    first_offset = rng.choice([0, 12345])
    max_record_bytes = rng.choice([4096, 65536])
    parsed = _parse(lines, source="x", first_offset=first_offset, max_record_bytes=max_record_bytes)
    rows, letters, records_in = _oracle(lines, "x", first_offset, max_record_bytes)
    assert parsed.records_in == records_in
    assert _letters(parsed) == letters
    assert parsed.batch.to_pylist() == rows


# --- positions from stream sources -----------------------------------------------------------------


@pytest.mark.parametrize("n_good", [3, 150])
def test_positions_tuple_is_used_instead_of_byte_offsets(n_good):
    lines = [_good(i) for i in range(n_good)] + [b'{"action":"x"}', b"{oops"]
    positions = tuple(f"shard-0:{1000 + i}" for i in range(len(lines)))
    parsed = _parse(lines, positions=positions)
    assert _letters(parsed) == [
        ("sessions", f"shard-0:{1000 + n_good}", "missing user_id", lines[-2]),
        (
            "sessions",
            f"shard-0:{1001 + n_good}",
            "malformed JSON: Expecting property name enclosed in double quotes at column 2",
            lines[-1],
        ),
    ]
    assert parsed.batch.num_rows == n_good


def test_positions_tuple_for_oversize_record():
    lines = [b'{"user_id":"a"}', b'{"user_id":"b","pad":"' + b"p" * 100 + b'"}']
    parsed = _parse(lines, positions=("p-0", "p-1"), max_record_bytes=64)
    assert [(d.position, d.reason) for d in parsed.dead_letters] == [("p-1", "oversize record: 124 bytes > 64")]


# --- CSV / TSV (the Airbnb layout) ------------------------------------------------------------------

AIRBNB_ROWS = [
    b"d1mm9tcy42,lookup,,,Windows Desktop,319.0",
    b"d1mm9tcy42,search_results,click,view_search_results,Windows Desktop,67753.0",
    b"yo8nz8bqcq,show,view,p3,Mac Desktop,",
]
AIRBNB_EXPECTED = [
    _row("d1mm9tcy42", ARRIVAL, action="lookup", device_type="Windows Desktop", secs_elapsed=319.0),
    _row(
        "d1mm9tcy42",
        ARRIVAL,
        action="search_results",
        action_type="click",
        action_detail="view_search_results",
        device_type="Windows Desktop",
        secs_elapsed=67753.0,
    ),
    _row("yo8nz8bqcq", ARRIVAL, action="show", action_type="view", action_detail="p3", device_type="Mac Desktop"),
]


def test_csv_with_header():
    parsed = _parse([CSV_HEADER, *AIRBNB_ROWS], fmt="csv", has_header=True)
    assert parsed.records_in == 3 and parsed.dead_letters == []
    assert parsed.batch.to_pylist() == AIRBNB_EXPECTED


def test_tsv_with_header():
    lines = [line.replace(b",", b"\t") for line in [CSV_HEADER, *AIRBNB_ROWS]]
    parsed = _parse(lines, fmt="tsv", has_header=True)
    assert parsed.records_in == 3 and parsed.dead_letters == []
    assert parsed.batch.to_pylist() == AIRBNB_EXPECTED


def test_csv_without_header_and_crlf():
    parsed = parse_session_chunk(RawBatch("f.csv", "csv", b"\r\n".join(AIRBNB_ROWS) + b"\r\n", arrival_ms=ARRIVAL))
    _assert_conserved(parsed)
    assert parsed.batch.to_pylist() == AIRBNB_EXPECTED


def test_has_header_only_skips_a_real_header():
    # A later chunk of the same file has has_header=True only at offset 0; a data line is never skipped.
    parsed = _parse(AIRBNB_ROWS, fmt="csv", has_header=True)
    assert parsed.batch.to_pylist() == AIRBNB_EXPECTED
    parsed = _parse([CSV_HEADER], fmt="csv", has_header=True)
    assert (parsed.records_in, parsed.batch.num_rows) == (0, 0)


def test_csv_bad_rows_exact_dead_letters():
    lines = [
        CSV_HEADER,
        AIRBNB_ROWS[0],
        b"d1w8,show,view",
        b"d1w8,show,view,p3,iPhone,1,extra",
        b",show,view,p3,iPhone,1",
        b"d1w9,a,b,c,d,abc",
        b"d1w9,a,b,c,d,-3",
        b"d1w9,a,b,c,\xff,1",
        AIRBNB_ROWS[2],
    ]
    parsed = _parse(lines, fmt="csv", source="train.csv", has_header=True, first_offset=0)
    off = _offsets(lines)
    assert parsed.records_in == 8
    assert parsed.batch.to_pylist() == [AIRBNB_EXPECTED[0], AIRBNB_EXPECTED[2]]
    assert _letters(parsed) == sorted(
        [
            ("sessions", f"train.csv@{off[2]}", "malformed record: 3 fields, expected 6", lines[2]),
            ("sessions", f"train.csv@{off[3]}", "malformed record: 7 fields, expected 6", lines[3]),
            ("sessions", f"train.csv@{off[4]}", "missing user_id", lines[4]),
            ("sessions", f"train.csv@{off[5]}", "non-numeric secs_elapsed 'abc'", lines[5]),
            ("sessions", f"train.csv@{off[6]}", "negative secs_elapsed", lines[6]),
            ("sessions", f"train.csv@{off[7]}", "bad UTF-8 at byte 11", lines[7]),
        ]
    )


def test_large_csv_chunk_with_bad_rows():
    n = 2000
    lines = [CSV_HEADER] + [b"u%d,show,view,p3,iPhone,%d" % (i, i) for i in range(n)]
    lines[500] = b"u499,show,view"
    lines[1500] = b"u1499,show,view,p3,iPhone,x"
    parsed = _parse(lines, fmt="csv", has_header=True, first_offset=0)
    off = _offsets(lines)
    assert parsed.records_in == n
    assert _letters(parsed) == [
        ("sessions", f"src@{off[500]}", "malformed record: 3 fields, expected 6", lines[500]),
        ("sessions", f"src@{off[1500]}", "non-numeric secs_elapsed 'x'", lines[1500]),
    ]
    kept = [i for i in range(n) if i not in (499, 1499)]
    assert parsed.batch.column("user_id").to_pylist() == [f"u{i}" for i in kept]
    assert parsed.batch.column("secs_elapsed").to_pylist() == [float(i) for i in kept]


def test_unknown_format_raises():
    with pytest.raises(ValueError, match="unknown session format 'parquet'"):
        parse_session_chunk(RawBatch("src", "parquet", b'{"user_id":"a"}\n'))


# --- validate_session_batch ---------------------------------------------------------------------------


def test_validate_session_batch_exact_rejects():
    table = pa.table(
        {
            "user_id": ["a", None, " ", "b", "c", "d", " e "],
            "event_time": ["2026-01-01T00:00:00Z", None, "x", "bad", None, "1000", None],
            "secs_elapsed": [1.0, 2.0, -1.0, 3.0, float("inf"), -2.0, None],
            "device_type": ["iPhone", None, None, None, None, None, "iPad"],
        }
    )
    for given in (table, table.to_batches()[0]):
        batch, rejects = validate_session_batch(given, arrival_ms=77)
        assert rejects == [
            (1, "missing user_id"),
            (2, "missing user_id"),
            (3, BAD_EVENT_TIME),
            (4, "non-finite secs_elapsed"),
            (5, "negative secs_elapsed"),
        ]
        assert batch.schema == SESSION_SCHEMA
        assert batch.to_pylist() == [
            _row("a", T0, secs_elapsed=1.0, device_type="iPhone"),
            _row("e", 77, device_type="iPad"),
        ]


def test_validate_session_batch_uses_event_time_ms_column_of_structured_batches():
    batch = pa.RecordBatch.from_pylist([_row("a", 5), _row("b", 6)], schema=SESSION_SCHEMA)
    out, rejects = validate_session_batch(batch, arrival_ms=1)
    assert rejects == [] and out.to_pylist() == [_row("a", 5), _row("b", 6)]


def test_validate_session_batch_all_rejected_gives_empty_batch():
    batch, rejects = validate_session_batch(pa.table({"user_id": [None, ""]}), arrival_ms=1)
    assert batch.num_rows == 0 and batch.schema == SESSION_SCHEMA
    assert rejects == [(0, "missing user_id"), (1, "missing user_id")]


# --- known bugs: the fast path and the per-line path disagree, or a bad value crashes the chunk -------


def _alone_and_in_large_chunk(line: bytes):
    alone = _parse([line])
    lines = [_good(i) for i in range(200)]
    lines.insert(100, line)
    large = _parse(lines)
    large_rows = [r for i, r in enumerate(large.batch.to_pylist()) if r["user_id"] == "u"]
    return alone, large, large_rows


def test_negative_event_time_reason_does_not_depend_on_chunk_size():
    alone, large, _ = _alone_and_in_large_chunk(b'{"user_id":"u","event_time":-5}')
    assert [d.reason for d in alone.dead_letters] == [d.reason for d in large.dead_letters]


def test_event_time_ms_field_is_treated_the_same_on_both_paths():
    alone, _, large_rows = _alone_and_in_large_chunk(b'{"user_id":"u","event_time_ms":77}')
    assert [r["event_time_ms"] for r in alone.batch.to_pylist()] == [r["event_time_ms"] for r in large_rows]


def test_nan_event_time_is_treated_the_same_on_both_paths():
    alone, large, large_rows = _alone_and_in_large_chunk(b'{"user_id":"u","event_time":NaN}')
    assert [d.reason for d in alone.dead_letters] == [d.reason for d in large.dead_letters]
    assert alone.batch.to_pylist() == large_rows


def test_infinite_event_time_is_a_dead_letter_not_a_crash():
    parsed = _parse([b'{"user_id":"a"}', b'{"user_id":"u","event_time":1e999}'])
    assert parsed.batch.num_rows == 1
    assert [d.reason.startswith("bad event_time") for d in parsed.dead_letters] == [True]


@pytest.mark.parametrize("size", ["small", "large"])
def test_event_time_beyond_int64_is_a_dead_letter(size):
    line = b'{"user_id":"u","event_time":100000000000000000000}'
    lines = [_good(i) for i in range(3 if size == "small" else 200)]
    lines.insert(1, line)
    parsed = _parse(lines)
    assert parsed.batch.num_rows == len(lines) - 1
    assert [(d.raw, d.reason.startswith("bad event_time")) for d in parsed.dead_letters] == [(line, True)]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_nan_secs_elapsed_is_rejected(fmt):
    line = b"u1,show,view,p3,iPhone,NaN" if fmt == "csv" else b'{"user_id":"u1","secs_elapsed":NaN}'
    parsed = _parse([line], fmt=fmt)
    assert [d.reason for d in parsed.dead_letters] == ["non-finite secs_elapsed"]


def test_csv_quoted_fields_are_unquoted():
    lines = [b'"d1",show,view,p3,iPhone,1', b'"a,b",show,view,"p3",iPhone,2']
    parsed = _parse(lines, fmt="csv")
    assert parsed.dead_letters == []
    assert parsed.batch.column("user_id").to_pylist() == ["d1", "a,b"]
