"""``FilterSessions`` with the ``state`` strategy alone, on a TestStream: streaming semantics.

A request that arrives mid-stream stops the subject's later sessions, whatever their event
time (late ones included); the sessions before it were already clean. Runs on beam-rtbf's
local streaming runner, with an empty registry: the request reaches the filter only
through the stream of accepted requests.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from beam_rtbf.filter.filter_sessions import FilterSessions
from beam_rtbf.filter.strategy import FilterConfig
from beam_rtbf.local_runner import LocalStreamingRunner
from beam_rtbf.records import AcceptedRequest, ErasureRequest
from tests.helpers.composites import session_rows, user_ids
from tests.helpers.data import T0


def _at(ms: int) -> float:
    return ms / 1000


def test_request_mid_stream_suppresses_later_and_late_sessions_and_keeps_earlier_ones(registry_url):
    forget_alice = AcceptedRequest(ErasureRequest("r-alice", "alice", T0 + 15_000), T0 + 15_000, version=1)
    stream = (
        TestStream()
        .add_elements([session_rows([("alice", T0 + 1_000), ("bob", T0 + 2_000)])], event_timestamp=_at(T0 + 1_000))
        .advance_watermark_to(_at(T0 + 12_000))
        .advance_processing_time(5)
        .add_elements([forget_alice], event_timestamp=_at(T0 + 15_000))
        .advance_processing_time(5)
        .advance_watermark_to(_at(T0 + 15_000))
        # After the request: a new session of alice, and a late one stamped before the request.
        .add_elements([session_rows([("alice", T0 + 16_000), ("bob", T0 + 17_000)])], event_timestamp=_at(T0 + 16_000))
        .add_elements([session_rows([("alice", T0 + 14_000)])], event_timestamp=_at(T0 + 14_000))
        .advance_watermark_to_infinity()
    )
    p = beam.Pipeline(runner=LocalStreamingRunner(), options=PipelineOptions(["--streaming"]))
    events = p | stream
    sessions = events | "OnlySessions" >> beam.Filter(lambda e: isinstance(e, pa.RecordBatch))
    accepted = events | "OnlyRequests" >> beam.Filter(lambda e: isinstance(e, AcceptedRequest))
    config = FilterConfig(registry_url, refresh_interval_s=0.2, max_staleness_s=30.0, state_shards=2)
    filtered = sessions | "FilterSessions" >> FilterSessions("state", accepted, config, streaming=True)

    clean = filtered.clean | "CleanRows" >> beam.FlatMap(
        lambda b: list(zip(user_ids(b), b["event_time_ms"].to_pylist()))
    )
    assert_that(clean, equal_to([("alice", T0 + 1_000), ("bob", T0 + 2_000), ("bob", T0 + 17_000)]), label="Clean")
    # One count per filtered batch that lost rows: the new session, then the late one.
    assert_that(filtered.suppressed, equal_to([1, 1]), label="Suppressed")
    # Effective once both shards applied it: after it was accepted, once.
    effective = filtered.effective | "Effective" >> beam.Map(
        lambda e: (e[0].request.request_id, e[1] >= e[0].accepted_at_ms)
    )
    assert_that(effective, equal_to([("r-alice", True)]), label="EffectiveOnce")
    p.run().wait_until_finish()
