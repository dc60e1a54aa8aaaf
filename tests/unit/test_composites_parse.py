"""``ParseSessions`` alone: raw chunks and structured batches in, exact sessions and dead letters out."""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_rtbf.parse.sessions import ParseSessions
from tests.helpers.composites import jsonl_chunk, rows_of, rtbf_counters, session_rows
from tests.helpers.data import T0

LINES = [
    {"user_id": "alice", "event_time": T0 + 1_000, "action_type": "view", "secs_elapsed": 3.5},
    "{not json",
    {"event_time": T0 + 2_000},
    {"user_id": "bob", "event_time": "2026-01-01T00:00:03Z", "device_type": "Mac"},
    {"user_id": "carol", "event_time": "yesterday"},
]


def _offset_of(index: int) -> int:
    """Byte offset of line ``index`` in the chunk ``jsonl_chunk(LINES)`` builds."""
    return sum(len((line if isinstance(line, str) else json.dumps(line)).encode()) + 1 for line in LINES[:index])


def test_parse_sessions_splits_a_chunk_into_exact_sessions_and_dead_letters():
    chunk = jsonl_chunk(LINES)
    structured = session_rows([("dave", T0 + 4_000)])
    p = TestPipeline()
    parsed = p | beam.Create([chunk, structured]) | "ParseSessions" >> ParseSessions()
    sessions = parsed.sessions | "SessionRows" >> beam.FlatMap(
        lambda b: rows_of(b, "user_id", "event_time_ms", "action_type", "device_type", "secs_elapsed")
    )
    assert_that(
        sessions,
        equal_to(
            [
                ("alice", T0 + 1_000, "view", None, 3.5),
                ("bob", T0 + 3_000, None, "Mac", None),
                ("dave", T0 + 4_000, "view", "iPhone", 10.0),
            ]
        ),
        label="ExactSessions",
    )
    letters = parsed.deadletter | "LetterFields" >> beam.Map(lambda d: (d.stream, d.position, d.reason, d.raw))
    where = "test://sessions.jsonl@"
    assert_that(
        letters,
        equal_to(
            [
                (
                    "sessions",
                    f"{where}{_offset_of(1)}",
                    "malformed JSON: Expecting property name enclosed in double quotes at column 2",
                    b"{not json",
                ),
                ("sessions", f"{where}{_offset_of(2)}", "missing user_id", json.dumps(LINES[2]).encode()),
                (
                    "sessions",
                    f"{where}{_offset_of(4)}",
                    "bad event_time: not RFC 3339 or epoch millis in [0, year 9999]",
                    json.dumps(LINES[4]).encode(),
                ),
            ]
        ),
        label="ExactDeadLetters",
    )
    counters = rtbf_counters(p.run())
    assert counters["sessions_in"] == 6
    assert counters["sessions_dead_lettered"] == 3


def test_parse_sessions_rejects_an_element_of_the_wrong_type():
    import pytest

    p = TestPipeline()
    _ = p | beam.Create(["not a batch"]) | ParseSessions()
    with pytest.raises(Exception, match="ParseSessions got str; expected RawBatch or RecordBatch"):
        p.run()
