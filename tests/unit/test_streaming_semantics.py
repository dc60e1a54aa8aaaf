"""Streaming semantics with TestStream: a request arriving mid-stream, watermarks, late data.

Runs on beam-rtbf's local streaming runner (the BundleBasedDirectRunner with
its fixes), with the ``state`` strategy that local streaming uses.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from beam_rtbf.local_runner import LocalStreamingRunner
from beam_rtbf.options import RtbfOptions
from beam_rtbf.pipeline import build_pipeline
from beam_rtbf.records import ErasureRequest
from beam_rtbf.summary import collect_counters
from tests.helpers.data import T0, analytics_rows, archive_rows, manifests, request_batch, sessions

pytestmark = pytest.mark.slow


def _options(tmp_path, registry_url, *extra: str) -> PipelineOptions:
    return PipelineOptions(
        [
            "--streaming",
            f"--output={tmp_path / 'out'}",
            f"--registry={registry_url}",
            "--window_s=10",
            "--archive_partition_s=60",
            "--state_shards=2",
            *extra,
        ]
    )


def _user_ids(batch: pa.RecordBatch) -> list[str]:
    return batch.column("user_id").to_pylist()


def test_request_mid_stream_stops_later_sessions_and_lists_earlier_ones(tmp_path, registry_url):
    """Before the request: alice's sessions flow. After it: none, whatever their event time."""
    forget_alice = ErasureRequest("r-alice", "alice", T0 + 15_000)
    stream = (
        TestStream()
        .add_elements([sessions([("alice", T0 + 1_000), ("bob", T0 + 2_000)])], event_timestamp=(T0 + 1_000) / 1000)
        .advance_watermark_to((T0 + 12_000) / 1000)
        .advance_processing_time(5)
        .add_elements([request_batch(forget_alice)], event_timestamp=(T0 + 15_000) / 1000)
        .advance_processing_time(5)
        .advance_watermark_to((T0 + 15_000) / 1000)
        # After the request: a new session, and a late one stamped before the request.
        .add_elements(
            [sessions([("alice", T0 + 16_000), ("bob", T0 + 17_000), ("alice", T0 + 14_000)])],
            event_timestamp=(T0 + 14_000) / 1000,
        )
        .advance_watermark_to_infinity()
    )
    opts = _options(tmp_path, registry_url)
    p = beam.Pipeline(runner=LocalStreamingRunner(), options=opts)
    events = p | stream
    session_events = events | "OnlySessions" >> beam.Filter(lambda e: isinstance(e, pa.RecordBatch))
    request_events = events | "OnlyRequests" >> beam.Filter(lambda e: not isinstance(e, pa.RecordBatch))
    out = build_pipeline(
        p, opts.view_as(RtbfOptions), streaming=True, strategy="state", sessions=session_events, requests=request_events
    )
    clean_users = out.clean | beam.FlatMap(_user_ids)
    assert_that(clean_users, equal_to(["alice", "bob", "bob"]), label="CleanUsers")
    result = p.run()
    result.wait_until_finish()
    counters = collect_counters(result)
    assert counters["suppressed"] == 2
    assert counters["sessions_in"] == 5
    assert counters["clean"] == 3

    archived = archive_rows(str(tmp_path / "out"))
    assert sorted(archived.column("user_id").to_pylist()) == ["alice", "bob", "bob"]
    alice_times = [
        t
        for u, t in zip(archived.column("user_id").to_pylist(), archived.column("event_time_ms").to_pylist())
        if u == "alice"
    ]
    assert alice_times == [T0 + 1_000]  # only the session before the request
    windows = analytics_rows(str(tmp_path / "out"))
    assert sum(r["sessions"] for r in windows) == 3
    manifest = manifests(str(tmp_path / "out"))["r-alice"]
    partitions = manifest["locations"]["archive_partitions"]
    assert len(partitions) == 1 and partitions[0]["records"] == 1
    assert "dt=2026-01-01/hour=00/minute=00" in partitions[0]["path"]
    assert manifest["locations"]["analytics_windows"] == [
        {"start": "2026-01-01T00:00:00.000Z", "end": "2026-01-01T00:00:10.000Z"}
    ]
    assert manifest["subject_ids"] == ["alice"]


def test_windows_close_on_the_watermark_and_late_data_is_dropped(tmp_path, registry_url):
    """Aggregates per 10 s window; a session behind the watermark (past lateness) is not counted."""
    stream = (
        TestStream()
        .add_elements(
            [sessions([("a", T0 + 1_000), ("b", T0 + 2_000), ("a", T0 + 3_000)])], event_timestamp=(T0 + 1_000) / 1000
        )
        .add_elements([sessions([("c", T0 + 11_000)])], event_timestamp=(T0 + 11_000) / 1000)
        .advance_watermark_to((T0 + 30_000) / 1000)
        .add_elements([sessions([("late", T0 + 5_000)])], event_timestamp=(T0 + 5_000) / 1000)
        .advance_watermark_to_infinity()
    )
    opts = _options(tmp_path, registry_url)
    with beam.Pipeline(runner=LocalStreamingRunner(), options=opts) as p:
        session_events = p | stream
        no_requests = p | "NoRequests" >> beam.Create([])
        out = build_pipeline(
            p,
            opts.view_as(RtbfOptions),
            streaming=True,
            strategy="state",
            sessions=session_events,
            requests=no_requests,
        )
        panes = out.analytics | beam.Map(
            lambda t: sorted((r["window_start"], r["sessions"], r["distinct_users"]) for r in t.to_pylist())
        )
        assert_that(
            panes,
            equal_to(
                [
                    [("2026-01-01T00:00:00.000Z", 3, 2)],
                    [("2026-01-01T00:00:10.000Z", 1, 1)],
                ]
            ),
        )
