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


def _reference(rows: list[dict], window_ms: int) -> list[tuple]:
    """The seed's metric in plain Python: per (window, action_type, device_type) the sessions,
    distinct users, and the mean of the non-null secs_elapsed."""
    groups: dict[tuple, dict] = {}
    for r in rows:
        key = ((r["event_time_ms"] // window_ms) * window_ms, r["action_type"], r["device_type"])
        g = groups.setdefault(key, {"sessions": 0, "users": set(), "secs": []})
        g["sessions"] += 1
        g["users"].add(r["user_id"])
        if r["secs_elapsed"] is not None:
            g["secs"].append(r["secs_elapsed"])
    return sorted(
        ((*k, g["sessions"], len(g["users"]), round(sum(g["secs"]) / len(g["secs"]), 9) if g["secs"] else None)
         for k, g in groups.items()),
        key=repr,
    )  # fmt: skip


def test_partials_of_many_batches_with_null_keys_merge_to_the_exact_metric():
    import random

    from beam_rtbf.analytics.aggregate import merge_partials, partial_aggregates

    rng = random.Random(7)
    batches, rows = [], []
    for b in range(6):
        # Each batch sees its own subset of key values (nulls and empty strings too), in its own order.
        actions = rng.sample(["view", "click", None, "booking_request", "é-action", ""], 4)
        devices = rng.sample(["iPhone", None, "Mac", "Android Phone"], 3)
        batch_rows = [
            {
                "user_id": f"u{rng.randrange(40)}",
                "event_time_ms": T0 + rng.randrange(0, 7_200_000),
                "action_type": rng.choice(actions),
                "device_type": rng.choice(devices),
                "secs_elapsed": rng.choice([None, rng.random() * 100]),
            }
            for _ in range(400 + 50 * b)
        ]
        rows += batch_rows
        batches.append(pa.RecordBatch.from_pylist(batch_rows))
    window_ms = 60_000
    partials = [p for batch in batches for _, p in partial_aggregates(batch, window_ms, 3_600_000)]
    merged = merge_partials(partials)
    assert (
        merged.schema.field("action_type").type == pa.string()
        and merged.schema.field("device_type").type == pa.string()
    )

    def rounded(table: pa.Table) -> list[tuple]:
        return sorted((
            (r["window_start"], r["action_type"], r["device_type"], r["sessions"], r["distinct_users"],
             None if r["avg_secs_elapsed"] is None else round(r["avg_secs_elapsed"], 9))
            for r in table.to_pylist()
        ), key=repr)  # fmt: skip

    got = rounded(merged)
    assert got == _reference(rows, window_ms)
    assert sum(r[3] for r in got) == len(rows)  # every session counted once
    assert len({r[1] for r in got}) == 6 and None in {r[2] for r in got}  # every key value, nulls included
    # Merged in another order: the same rows, in the same order.
    reversed_order = merge_partials(partials[::-1])
    assert rounded(reversed_order) == got
    assert reversed_order.select(["window_start", "action_type", "device_type"]).equals(
        merged.select(["window_start", "action_type", "device_type"])
    )
