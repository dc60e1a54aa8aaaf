"""``WindowedAggregates`` alone: exact aggregate rows per window, bounded and streaming panes."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to, equal_to_per_window
from apache_beam.transforms.window import IntervalWindow

from beam_rtbf.analytics.aggregate import WindowedAggregates
from tests.helpers.composites import rows_of, session_rows
from tests.helpers.data import T0

COLUMNS = ("window_start", "window_end", "action_type", "device_type", "sessions", "distinct_users")
BATCHES = [
    session_rows([("a", T0 + 1_000), ("b", T0 + 2_000), ("a", T0 + 3_000)]),
    session_rows([("a", T0 + 4_000)], action_type="click"),
    session_rows([("c", T0 + 11_000), ("a", T0 + 12_000)], device="Mac"),
]
FIRST = [
    ("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:10.000Z", "click", "iPhone", 1, 1),
    ("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:10.000Z", "view", "iPhone", 3, 2),
]
SECOND = [("2026-01-01T00:00:10.000Z", "2026-01-01T00:00:20.000Z", "view", "Mac", 2, 2)]


def _pane_rows(pane) -> list[tuple]:
    return rows_of(pane, *COLUMNS)


def test_bounded_aggregates_come_in_one_pane_per_hour_bucket_with_a_row_per_window_and_key():
    p = TestPipeline()
    panes = p | beam.Create(BATCHES) | WindowedAggregates(window_s=10, streaming=False) | beam.Map(_pane_rows)
    assert_that(panes, equal_to([FIRST + SECOND]))
    p.run()


def test_streaming_aggregates_come_in_one_pane_per_window():
    p = TestPipeline()
    panes = p | beam.Create(BATCHES) | WindowedAggregates(window_s=10, streaming=True) | beam.Map(_pane_rows)
    start = T0 // 1000
    assert_that(
        panes,
        equal_to_per_window(
            {IntervalWindow(start, start + 10): [FIRST], IntervalWindow(start + 10, start + 20): [SECOND]}
        ),
        reify_windows=True,
    )
    p.run()


def test_mean_secs_elapsed_is_per_session_not_per_user():
    batch = session_rows([("a", T0), ("a", T0 + 1), ("b", T0 + 2)])
    secs = batch.schema.get_field_index("secs_elapsed")
    batch = batch.set_column(secs, batch.schema.field(secs), pa.array([1.0, 2.0, 6.0], pa.float64()))
    p = TestPipeline()
    means = (
        p
        | beam.Create([batch])
        | WindowedAggregates(window_s=10, streaming=False)
        | beam.Map(lambda t: t.column("avg_secs_elapsed").to_pylist())
    )
    assert_that(means, equal_to([[3.0]]))
    p.run()


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="window_s must be >= 1"):
        WindowedAggregates(window_s=0)
