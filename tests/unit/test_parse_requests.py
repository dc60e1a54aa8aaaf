"""parse/requests.py: requests from a dedicated stream, or picked out of a shared event stream."""

from __future__ import annotations

import json

import pytest

from beam_rtbf.parse.request_events import ParsedRequests, RequestSelector, parse_request_chunk, requests_from_lines
from beam_rtbf.records import ErasureRequest, RawBatch

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
ARRIVAL = T0 + 5_000  # the chunk's arrival time: requested_at of requests that carry none
SHARED = RequestSelector(tag_field="type", tag_values=("gdpr.delete_user",))
SHARED_NESTED = RequestSelector(tag_field="type", tag_values=("gdpr.delete_user",), payload_field="data")


def _lines(*objs) -> list[bytes]:
    return [o if isinstance(o, bytes) else json.dumps(o).encode() for o in objs]


def _offsets(lines: list[bytes], first_offset: int = 0) -> list[int]:
    out, offset = [], first_offset
    for line in lines:
        out.append(offset)
        offset += len(line) + 1
    return out


def _parse(lines: list[bytes], selector=RequestSelector(), first_offset=0, **kw) -> ParsedRequests:
    data = b"".join(line + b"\n" for line in lines)
    raw = RawBatch("req", "jsonl", data, first_offset, kw.pop("positions", None), kw.pop("arrival_ms", ARRIVAL))
    parsed = parse_request_chunk(raw, selector, **kw)
    assert parsed.records_in == len(parsed.requests) + parsed.ignored + len(parsed.dead_letters)
    assert all(d.stream == "requests" and d.source == "req" for d in parsed.dead_letters)
    return parsed


def test_dedicated_stream_every_well_formed_record_is_a_request():
    lines = _lines(
        {"request_id": "r1", "subject_id": "u1", "requested_at": "2026-01-01T00:00:00Z"},
        {"request_id": "r2", "user_id": "u2", "requested_at": 5, "regulation": "CCPA", "email": "u2@x"},
        {"request_id": "r3", "subject_id": "u3", "requested_at": T0, "aliases": ["dev-3"], "type": "anything"},
    )
    parsed = _parse(lines)
    assert parsed.requests == [
        ErasureRequest("r1", "u1", T0),
        ErasureRequest("r2", "u2", 5, regulation="ccpa", aliases=("u2@x",)),
        ErasureRequest("r3", "u3", T0, aliases=("dev-3",)),
    ]
    assert (parsed.records_in, parsed.ignored, parsed.dead_letters) == (3, 0, [])


def test_dedicated_stream_bad_records_are_dead_lettered_with_reasons():
    lines = _lines(
        {"request_id": "ok", "subject_id": "u", "requested_at": 1},
        {"request_id": "r3"},
        b"{bad",
        b"[1]",
        {"request_id": "r4", "subject_id": "u", "requested_at": 1, "regulation": "lgpd"},
        {"request_id": "r5", "subject_id": "u", "requested_at": 1, "kind": "export"},
        {"type": "page_view"},
        b'{"request_id":"r\xff"}',
        {"request_id": "r6", "subject_id": "u"},
        {"request_id": "r7", "subject_id": "u", "requested_at": "last week"},
        {"request_id": "r8", "subject_id": "u", "requested_at": 1, "aliases": [""]},
    )
    lines.insert(3, b"")  # blank lines are not records
    lines.insert(5, b"   ")
    parsed = _parse(lines, first_offset=50)
    off = _offsets(lines, 50)
    assert parsed.requests == [ErasureRequest("ok", "u", 1), ErasureRequest("r6", "u", ARRIVAL)]
    assert (parsed.records_in, parsed.ignored) == (11, 0)
    assert [(d.position, d.reason, d.raw) for d in parsed.dead_letters] == [
        (f"req@{off[1]}", "missing subject_id", lines[1]),
        (f"req@{off[2]}", "malformed JSON: Expecting property name enclosed in double quotes at column 2", lines[2]),
        (f"req@{off[4]}", "malformed record: JSON value is not an object", lines[4]),
        (f"req@{off[6]}", "unknown regulation 'lgpd' (expected one of ('gdpr', 'ccpa'))", lines[6]),
        (f"req@{off[7]}", "unsupported kind 'export' (expected one of ('erase',))", lines[7]),
        (f"req@{off[8]}", "missing request_id", lines[8]),
        (f"req@{off[9]}", "bad UTF-8 at byte 16", lines[9]),
        (f"req@{off[11]}", "bad time 'last week': not RFC 3339 or epoch millis", lines[11]),
        (f"req@{off[12]}", "aliases must be non-empty strings", lines[12]),
    ]


def test_shared_stream_other_event_types_are_ignored_not_dead_lettered():
    lines = _lines(
        {"type": "page_view", "user_id": "u1"},
        {"type": "gdpr.delete_user", "request_id": "r1", "subject_id": "u1", "requested_at": 1000},
        {"type": "purchase", "amount": 3},
        {"no_type": True},
        {"type": None},
        {"type": "GDPR.DELETE_USER", "request_id": "r9", "subject_id": "u9", "requested_at": 1},  # tags are exact
        {"type": "gdpr.delete_user", "request_id": "r2", "subject_id": "u2"},
        b"not json",
    )
    parsed = _parse(lines, SHARED)
    off = _offsets(lines)
    assert parsed.requests == [ErasureRequest("r1", "u1", 1000), ErasureRequest("r2", "u2", ARRIVAL)]
    assert parsed.ignored == 5
    assert [(d.position, d.reason) for d in parsed.dead_letters] == [
        (f"req@{off[7]}", "malformed JSON: Expecting value at column 1"),
    ]
    assert parsed.records_in == 8


def test_shared_stream_several_tag_values():
    selector = RequestSelector(tag_field="kind_of_event", tag_values=("erase", "forget_me"))
    lines = _lines(
        {"kind_of_event": "erase", "request_id": "a", "subject_id": "s", "requested_at": 1},
        {"kind_of_event": "forget_me", "request_id": "b", "subject_id": "t", "requested_at": 2},
        {"kind_of_event": "view"},
    )
    parsed = _parse(lines, selector)
    assert [r.request_id for r in parsed.requests] == ["a", "b"] and parsed.ignored == 1


def test_shared_stream_with_nested_payload():
    lines = _lines(
        {
            "type": "gdpr.delete_user",
            "data": {"request_id": "r1", "subject_id": "u1", "requested_at": "2026-01-01T00:00:00Z", "email": "e@x"},
        },
        {"type": "page_view", "data": {"user_id": "u1"}},
        {"type": "gdpr.delete_user", "data": "r1"},
        {"type": "gdpr.delete_user"},
        # Fields outside the payload count too; the payload wins on conflicts.
        {"type": "gdpr.delete_user", "request_id": "outer", "data": {"subject_id": "u2", "requested_at": 2}},
        {
            "type": "gdpr.delete_user",
            "request_id": "outer",
            "data": {"request_id": "inner", "subject_id": "u3", "requested_at": 3},
        },
        {"type": "gdpr.delete_user", "data": {"request_id": "r9", "requested_at": 1}},
    )
    parsed = _parse(lines, SHARED_NESTED)
    off = _offsets(lines)
    assert parsed.requests == [
        ErasureRequest("r1", "u1", T0, aliases=("e@x",)),
        ErasureRequest("outer", "u2", 2),
        ErasureRequest("inner", "u3", 3),
    ]
    assert parsed.ignored == 1
    assert [(d.position, d.reason) for d in parsed.dead_letters] == [
        (f"req@{off[2]}", "erasure event without an object in 'data'"),
        (f"req@{off[3]}", "erasure event without an object in 'data'"),
        (f"req@{off[6]}", "missing subject_id"),
    ]


def test_positions_tuple_and_oversize_records():
    lines = _lines(
        {"request_id": "r1", "subject_id": "u1", "requested_at": 1},
        {"request_id": "r2", "subject_id": "u2", "requested_at": 1, "pad": "x" * 200},
        b"{",
    )
    parsed = _parse(lines, positions=("shard-7:100", "shard-7:101", "shard-7:102"), max_record_bytes=128)
    assert [r.request_id for r in parsed.requests] == ["r1"]
    assert [(d.position, d.reason, d.raw) for d in parsed.dead_letters] == [
        ("shard-7:101", f"oversize record: {len(lines[1])} bytes > 128", lines[1]),
        ("shard-7:102", "malformed JSON: Expecting property name enclosed in double quotes at column 2", b"{"),
    ]


def test_conservation_on_a_mixed_shared_stream():
    lines = []
    for i in range(500):
        if i % 5 == 0:
            lines.append(
                json.dumps(
                    {
                        "type": "gdpr.delete_user",
                        "data": {"request_id": f"r{i}", "subject_id": f"u{i}", "requested_at": i},
                    }
                ).encode()
            )
        elif i % 7 == 0:
            lines.append(b'{"type": "gdpr.delete_user", "data": {"request_id": "x"}}')
        elif i % 11 == 0:
            lines.append(b"garbage")
        else:
            lines.append(json.dumps({"type": "click", "i": i}).encode())
    parsed = _parse(lines, SHARED_NESTED)
    n_requests = len([i for i in range(500) if i % 5 == 0])
    n_missing = len([i for i in range(500) if i % 5 and i % 7 == 0])
    n_garbage = len([i for i in range(500) if i % 5 and i % 7 and i % 11 == 0])
    assert len(parsed.requests) == n_requests == 100
    assert [r.request_id for r in parsed.requests] == [f"r{i}" for i in range(0, 500, 5)]
    assert len(parsed.dead_letters) == n_missing + n_garbage
    assert parsed.ignored == 500 - n_requests - n_missing - n_garbage
    assert parsed.records_in == 500


def test_requests_from_lines_raises_on_any_bad_line():
    assert requests_from_lines(['{"request_id":"a","subject_id":"s","requested_at":1}']) == [
        ErasureRequest("a", "s", 1)
    ]
    with pytest.raises(ValueError, match="^missing subject_id; malformed JSON"):
        requests_from_lines(['{"request_id":"a"}', "{x"])


def test_infinite_requested_at_is_a_dead_letter_not_a_crash():
    parsed = _parse([b'{"request_id":"r","subject_id":"u","requested_at":1e999}'])
    assert parsed.requests == [] and len(parsed.dead_letters) == 1
