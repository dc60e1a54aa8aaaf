"""The parse composites alone (ParseSessions, ParseRequests) in a TestPipeline: outputs, dead letters, counters."""

from __future__ import annotations

import logging

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.parse.request_events import RequestSelector
from beam_rtbf.parse.requests import ParseRequests
from beam_rtbf.parse.sessions import ParseSessions, ProgressLog
from beam_rtbf.records import RawBatch

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _counters(result) -> dict[str, int]:
    query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(rtbf_metrics.NAMESPACE))
    return {c.key.metric.name: c.committed for c in query["counters"]}


def test_parse_sessions_splits_raw_and_structured_input_into_batches_and_dead_letters():
    raw = RawBatch(
        "s.jsonl",
        "jsonl",
        b'{"user_id":"alice","event_time":%d}\n{"action":"x"}\nnot json\n{"user_id":"bob","event_time":%d}\n'
        % (T0, T0 + 1),
    )
    structured = pa.RecordBatch.from_pylist(
        [{"user_id": "carol", "event_time_ms": T0 + 2}, {"user_id": "", "event_time_ms": T0 + 3}]
    )
    pipeline = TestPipeline()
    parsed = pipeline | beam.Create([raw, structured], reshuffle=False) | ParseSessions(max_record_bytes=1024)
    users = parsed.sessions | "Users" >> beam.FlatMap(
        lambda b: zip(b.column("user_id").to_pylist(), b.column(1).to_pylist())
    )
    assert_that(users, equal_to([("alice", T0), ("bob", T0 + 1), ("carol", T0 + 2)]), label="Sessions")
    letters = parsed.deadletter | "Letters" >> beam.Map(lambda d: (d.source, d.position, d.reason))
    assert_that(
        letters,
        equal_to(
            [
                ("s.jsonl", "s.jsonl@47", "missing user_id"),
                ("s.jsonl", "s.jsonl@62", "malformed JSON: Expecting value at column 1"),
                ("structured", "row 1", "missing user_id"),
            ]
        ),
        label="DeadLetters",
    )
    counters = _counters(pipeline.run())
    assert counters[rtbf_metrics.SESSIONS_IN] == 6
    assert counters[rtbf_metrics.SESSIONS_DEAD_LETTERED] == 3


def test_parse_requests_keeps_requests_ignores_other_events_and_dead_letters_bad_ones():
    raw = RawBatch(
        "events.jsonl",
        "jsonl",
        b'{"type":"erasure_request","request_id":"r1","subject_id":"alice","requested_at":%d}\n'
        b'{"type":"page_view","user_id":"bob"}\n'
        b'{"type":"erasure_request","subject_id":"carol"}\n' % T0,
    )
    pipeline = TestPipeline()
    parsed = pipeline | beam.Create([raw]) | ParseRequests(RequestSelector(tag_field="type"))
    assert_that(
        parsed.requests | beam.Map(lambda r: (r.request_id, r.subject_id, r.requested_at_ms)),
        equal_to([("r1", "alice", T0)]),
        label="Requests",
    )
    assert_that(parsed.deadletter | beam.Map(lambda d: d.reason), equal_to(["missing request_id"]), label="Letters")
    counters = _counters(pipeline.run())
    assert (counters[rtbf_metrics.REQUESTS_IN], counters[rtbf_metrics.REQUESTS_IGNORED]) == (3, 1)
    assert counters[rtbf_metrics.REQUESTS_DEAD_LETTERED] == 1


def test_progress_log_counts_per_instance_and_logs_at_most_every_interval(caplog):
    caplog.set_level(logging.INFO, logger="beam_rtbf.progress")
    first, second = ProgressLog(every_s=0.0), ProgressLog(every_s=3600.0)
    first.add(5)
    first.add(7)
    second.add(100)
    assert (first.count, second.count) == (12, 100)
    messages = [r.getMessage().split(",")[0] for r in caplog.records]
    assert messages == ["progress: 5 sessions parsed", "progress: 12 sessions parsed"]
