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


def _random_batches(
    seed: int, count: int = 6, users: int = 40, span_ms: int = 7_200_000
) -> tuple[list[pa.RecordBatch], list[dict]]:
    import random

    rng = random.Random(seed)
    batches, rows = [], []
    for b in range(count):
        actions = rng.sample(["view", "click", None, "booking_request", "é-action", ""], 4)
        devices = rng.sample(["iPhone", None, "Mac", "Android Phone"], 3)
        batch_rows = [
            {
                "user_id": f"u{rng.randrange(users)}",
                "event_time_ms": T0 + rng.randrange(0, span_ms),
                "action_type": rng.choice(actions),
                "device_type": rng.choice(devices),
                "secs_elapsed": rng.choice([None, rng.random() * 100]),
            }
            for _ in range(400 + 50 * b)
        ]
        rows += batch_rows
        batches.append(pa.RecordBatch.from_pylist(batch_rows))
    return batches, rows


def test_partials_of_many_batches_with_null_keys_merge_to_the_exact_metric():

    from beam_rtbf.analytics.aggregate import merge_partials, partial_aggregates

    batches, rows = _random_batches(7)  # each batch sees its own subset of key values, nulls too
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


def test_one_partial_of_all_sessions_is_the_exact_metric_and_survives_its_coder():
    """A bounded bundle's partial (one per bucket, all its batches at once) is the result as it is
    (no merge of pairs); encoded and decoded as it crosses the GroupByKey, it stays the same."""
    from beam_rtbf.analytics.partials import PartialCoder, merge_partials, partial_aggregates

    batches, rows = _random_batches(11)
    table = pa.Table.from_batches(batches)  # chunked columns, as the bundle gathers them
    window_ms = 60_000
    coder = PartialCoder()
    merged_rows = []
    buckets = []
    for start, partial in partial_aggregates(table, window_ms, 3_600_000):
        buckets.append(start)
        decoded = coder.decode(coder.encode(partial))
        assert decoded.cells.equals(partial.cells) and decoded.pairs.equals(partial.pairs)
        in_bucket = sum(1 for r in rows if start <= r["event_time_ms"] < start + 3_600_000)
        assert sum(decoded.cells.column("sessions").to_pylist()) == in_bucket  # every session once
        merged_rows += merge_partials([decoded]).to_pylist()
    assert buckets == sorted(set(buckets)) and len(buckets) == 2  # two hours from T0 (on the hour)
    got = sorted(
        ((r["window_start"], r["action_type"], r["device_type"], r["sessions"], r["distinct_users"],
          None if r["avg_secs_elapsed"] is None else round(r["avg_secs_elapsed"], 9)) for r in merged_rows),
        key=repr,
    )  # fmt: skip
    assert got == _reference(rows, window_ms)
    assert sum(r[3] for r in got) == len(rows)


def test_bounded_bundles_larger_than_the_gather_send_several_partials_that_merge_exactly(monkeypatch):
    """A bundle gathers at most BOUNDED_GATHER_ROWS rows per partial: with a tiny limit every
    batch is its own partial, the same user in two of them counts once (10 users over 3 minutes:
    most cells have users that several partials saw)."""
    from beam_rtbf.analytics import aggregate

    monkeypatch.setattr(aggregate, "BOUNDED_GATHER_ROWS", 500)
    batches, rows = _random_batches(5, users=10, span_ms=180_000)
    window_ms = 60_000
    p = TestPipeline()
    panes = (
        p
        | beam.Create(batches)
        | WindowedAggregates(window_s=60, streaming=False)
        | beam.FlatMap(
            lambda t: [
                (
                    r["window_start"], r["action_type"], r["device_type"], r["sessions"], r["distinct_users"],
                    None if r["avg_secs_elapsed"] is None else round(r["avg_secs_elapsed"], 9),
                )
                for r in t.to_pylist()
            ]
        )
    )  # fmt: skip
    import datetime as dt

    def iso(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    expected = [(iso(r[0]), *r[1:]) for r in _reference(rows, window_ms)]
    assert_that(panes, equal_to(expected))
    p.run()


def test_cells_too_many_for_one_integer_key_are_found_by_sorting():
    """Windows x actions x devices beyond 2**62 (years of tiny windows, many key values) take the
    sorting path: the same metric."""
    from beam_rtbf.analytics.partials import merge_partials, partial_aggregates

    rows = [
        {"user_id": u, "event_time_ms": t, "action_type": a, "device_type": d, "secs_elapsed": s}
        for u, t, a, d, s in [
            ("u1", 0, "view", "Mac", 1.0),
            ("u2", 0, "view", "Mac", None),
            ("u1", 1 << 61, "view", "Mac", 3.0),
            ("u1", 1 << 61, "click", None, 5.0),
            ("u3", (1 << 61) + 7, None, "iPhone", 2.0),
            ("u1", 0, "click", None, 4.0),
        ]
    ]
    batch = pa.RecordBatch.from_pylist(rows)
    parts = [p for _, p in partial_aggregates(batch, 1, 1 << 62)]
    assert len(parts) == 1
    got = sorted(
        ((r["window_start"], r["action_type"], r["device_type"], r["sessions"], r["distinct_users"], r["avg_secs_elapsed"])
         for r in merge_partials(parts).to_pylist()),
        key=repr,
    )  # fmt: skip
    assert got == _reference(rows, 1)


def test_dictionary_coded_keys_and_an_all_null_seconds_column_give_the_plain_metric():
    """Key columns may arrive dictionary-coded (a dictionary may even repeat a value) and
    secs_elapsed typed null when every value is missing: the metric is the plain one."""
    from beam_rtbf.analytics.partials import merge_partials, partial_aggregates

    rows = [
        {"user_id": u, "event_time_ms": T0 + t, "action_type": a, "device_type": d, "secs_elapsed": None}
        for u, t, a, d in [
            ("u1", 0, "a", None),
            ("u2", 5, "a", "Mac"),
            ("u1", 9, None, "Mac"),
            ("u3", 70_000, "a", None),
        ]
    ]
    actions = pa.DictionaryArray.from_arrays(pa.array([0, 1, None, 1], pa.int32()), pa.array(["a", "a"]))
    batch = pa.RecordBatch.from_pylist(rows).set_column(2, "action_type", actions)
    assert batch.schema.field("secs_elapsed").type == pa.null()
    parts = [p for _, p in partial_aggregates(batch, 60_000, 3_600_000)]
    got = sorted(
        ((r["window_start"], r["action_type"], r["device_type"], r["sessions"], r["distinct_users"], r["avg_secs_elapsed"])
         for r in merge_partials(parts).to_pylist()),
        key=repr,
    )  # fmt: skip
    assert got == _reference(rows, 60_000)
