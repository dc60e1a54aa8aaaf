"""``FilterSessions`` alone: every registered strategy, on the same input, gives the same output.

Bounded (TestPipeline on the local batch runner) over the embedded SQLite registry, which
holds every accepted request, as ``RecordRequests`` leaves it before the filter runs.
"""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_rtbf.filter import STRATEGIES
from beam_rtbf.filter.filter_sessions import FilterSessions
from beam_rtbf.filter.outputs import CLEAN_TAG, SUPPRESSED_TAG, FilteredSessions
from beam_rtbf.filter.strategies import AUTO, FILTER_STRATEGIES
from beam_rtbf.filter.strategy import FilterConfig, FilterStrategy
from beam_rtbf.records import AcceptedRequest, ErasureRequest
from beam_rtbf.registry import open_registry
from tests.helpers.composites import rtbf_counters, session_rows, user_ids
from tests.helpers.data import T0

REQUESTS = [
    ErasureRequest("r-alice", "alice", T0),
    ErasureRequest("r-dave", "dave", T0, aliases=("dave@example.com",)),
]
BATCHES = [
    session_rows([("alice", T0 + 1), ("bob", T0 + 2), ("carol", T0 + 3)]),
    # "other" shares dave's e-mail: an alias match drops it too.
    session_rows([("bob", T0 + 4), ("other", T0 + 5, "dave@example.com"), ("dave", T0 + 6), ("erin", T0 + 7)]),
    session_rows([("alice", T0 + 8)]),  # nothing clean in this one
]
CLEAN = ["bob", "bob", "carol", "erin"]
SUPPRESSED = 4  # alice twice, dave, and "other" by alias


def _accepted(registry_url: str) -> list[AcceptedRequest]:
    with open_registry(registry_url) as registry:
        return registry.add(REQUESTS)


def test_every_choice_but_auto_is_a_registered_strategy():
    assert set(FILTER_STRATEGIES) == set(STRATEGIES) - {AUTO}
    assert all(FILTER_STRATEGIES[name].name == name for name in FILTER_STRATEGIES)


@pytest.mark.parametrize("strategy", sorted(FILTER_STRATEGIES))
def test_strategy_gives_the_same_clean_rows_suppressed_count_and_effective_list(strategy, registry_url):
    accepted = _accepted(registry_url)
    p = TestPipeline()
    sessions = p | "Sessions" >> beam.Create(BATCHES)
    requests = p | "Accepted" >> beam.Create(accepted)
    config = FilterConfig(registry_url, refresh_interval_s=0.1, max_staleness_s=30.0, state_shards=2)
    filtered = sessions | "FilterSessions" >> FilterSessions(strategy, requests, config, streaming=False)

    assert isinstance(filtered, FilteredSessions)
    assert_that(filtered.clean | "CleanUsers" >> beam.FlatMap(user_ids), equal_to(CLEAN), label="Clean")
    total = filtered.suppressed | "Total" >> beam.CombineGlobally(sum)
    assert_that(total, equal_to([SUPPRESSED]), label="Suppressed")
    accepted_at = {a.request.request_id: a.accepted_at_ms for a in accepted}

    def effective_row(element: tuple[AcceptedRequest, int]) -> tuple[str, bool]:
        request, at_ms = element
        recorded_at = accepted_at[request.request.request_id]
        # Bounded side-input and lookup strategies: effective when recorded; keyed state: when applied.
        return request.request.request_id, (at_ms >= recorded_at if strategy == "state" else at_ms == recorded_at)

    effective = filtered.effective | "EffectiveRows" >> beam.Map(effective_row)
    assert_that(effective, equal_to([("r-alice", True), ("r-dave", True)]), label="Effective")

    counters = rtbf_counters(p.run())
    assert counters["clean"] == len(CLEAN)
    assert counters["suppressed"] == SUPPRESSED


def test_strategy_labels_sit_under_filter_sessions(registry_url):
    p = beam.Pipeline()
    sessions = p | "Sessions" >> beam.Create(BATCHES)
    requests = p | "Accepted" >> beam.Create([])
    _ = sessions | "FilterSessions" >> FilterSessions("state", requests, FilterConfig(registry_url), streaming=True)
    names = {t.unique_name for t in p.to_runner_api().components.transforms.values()}
    # Flink keeps keyed state by these names: renaming them loses a savepoint's state.
    assert {"FilterSessions/DropForgottenInState", "FilterSessions/WaitForAllShards"} <= names


class _DropEveryone(FilterStrategy):
    """A stand-in strategy: suppresses every row, effective at 0."""

    name = "drop-everyone"

    def apply(self, sessions, accepted) -> FilteredSessions:
        outputs = sessions | "DropAll" >> beam.FlatMap(
            lambda b: [beam.pvalue.TaggedOutput(SUPPRESSED_TAG, b.num_rows)]
        ).with_outputs(SUPPRESSED_TAG, main=CLEAN_TAG)
        effective = accepted | "AtZero" >> beam.Map(lambda a: (a, 0))
        return FilteredSessions(outputs[CLEAN_TAG], outputs[SUPPRESSED_TAG], effective)


def test_a_strategy_can_be_added_to_the_registry(monkeypatch, registry_url):
    monkeypatch.setitem(FILTER_STRATEGIES, _DropEveryone.name, _DropEveryone)
    p = TestPipeline()
    sessions = p | "Sessions" >> beam.Create(BATCHES)
    requests = p | "Accepted" >> beam.Create(["a"])
    filtered = sessions | FilterSessions("drop-everyone", requests, FilterConfig(registry_url), streaming=False)
    assert_that(filtered.clean, equal_to([]), label="NoneClean")
    assert_that(filtered.suppressed | beam.CombineGlobally(sum), equal_to([8]), label="AllSuppressed")
    assert_that(filtered.effective, equal_to([("a", 0)]), label="Effective")
    p.run()


def test_unknown_and_unresolved_strategies_are_refused(registry_url):
    accepted = beam.Pipeline() | beam.Create([])
    config = FilterConfig(registry_url)
    with pytest.raises(ValueError, match="unknown filter strategy 'nope'; expected one of broadcast, lookup"):
        FilterSessions("nope", accepted, config, streaming=False)
    with pytest.raises(ValueError, match="resolve 'auto' with choose_strategy first"):
        FilterSessions(AUTO, accepted, config, streaming=False)
    with pytest.raises(ValueError, match="state_shards must be >= 1"):
        FilterSessions("state", accepted, FilterConfig(registry_url, state_shards=0), streaming=False)
    with pytest.raises(ValueError, match="unknown filter strategy 'state'; expected one of only"):
        FilterSessions("state", accepted, config, streaming=False, strategies={"only": _DropEveryone})
