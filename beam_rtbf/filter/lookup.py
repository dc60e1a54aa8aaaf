"""The ``lookup`` strategy: ask the registry about each batch's distinct ids, in one round trip.

Redis SMISMEMBER answers thousands of ids per call, so a batch of 100 K
sessions costs one query for its distinct users, never one per record. Nothing
is held in memory, so it suits deletion sets too big to broadcast; the price is
a registry round trip per batch. Retry policy: ``RegistryUnavailable`` is
retried with backoff for ``retry_budget_s``, then raised so the runner retries
the bundle: sessions wait, they are never passed unfiltered.
"""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.filter.deletion_set import DeletionSet
from beam_rtbf.filter.outputs import CLEAN_TAG, SUPPRESSED_TAG, FilteredSessions, SplitCounters
from beam_rtbf.filter.strategy import FilterStrategy, effective_after
from beam_rtbf.filter.suppress import split_batch
from beam_rtbf.records import ALIAS_COLUMNS
from beam_rtbf.registry import open_registry
from beam_rtbf.registry.record import with_retries

__all__ = ["LookupStrategy", "distinct_ids", "RegistryConfirmer"]


def distinct_ids(batch: pa.RecordBatch, rows: pa.Array | None = None) -> list[str]:
    """Distinct non-null ids in the user id and alias columns (optionally only ``rows``)."""
    columns = [batch.column("user_id"), *(batch.column(name) for name in ALIAS_COLUMNS)]
    if rows is not None:
        columns = [column.take(rows) for column in columns]
    values = pa.chunked_array([c for c in columns if c.null_count < len(c)], type=pa.string())
    return pc.unique(pc.drop_null(values)).to_pylist() if len(values) else []


class RegistryConfirmer:
    """A registry client that turns candidate ids into the deletion set among them."""

    def __init__(self, registry_url: str, retry_budget_s: float) -> None:
        self._registry_url = registry_url
        self._retry_budget_s = retry_budget_s
        self._registry = None
        self._errors = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.REGISTRY_ERRORS)

    def forgotten_among(self, ids: list[str]) -> DeletionSet:
        if not ids:
            return DeletionSet()

        def ask() -> list[bool]:
            try:
                if self._registry is None:
                    self._registry = open_registry(self._registry_url)
                return self._registry.contains(ids)
            except Exception:
                self._errors.inc()
                self.close()
                raise

        flags = with_retries(ask, self._retry_budget_s)
        return DeletionSet.of([i for i, forgotten in zip(ids, flags) if forgotten])

    def close(self) -> None:
        if self._registry is not None:
            try:
                self._registry.close()
            finally:
                self._registry = None


class _LookupFn(beam.DoFn):
    def __init__(self, registry_url: str, retry_budget_s: float) -> None:
        self._registry_url = registry_url
        self._retry_budget_s = retry_budget_s
        self._counters = SplitCounters()

    def setup(self) -> None:
        self._confirmer = RegistryConfirmer(self._registry_url, self._retry_budget_s)

    def process(self, batch: pa.RecordBatch, *unused_barrier) -> Iterable:
        yield from self._counters.emit(*split_batch(batch, self._confirmer.forgotten_among(distinct_ids(batch))))

    def teardown(self) -> None:
        self._confirmer.close()


class LookupStrategy(FilterStrategy):
    """Drop forgotten sessions by one registry membership query per batch.

    Bounded runs wait for a barrier (a singleton side input counted from this run's
    accepted requests), so no batch is looked up before they are all recorded. A
    request is effective once recorded: the next batch's query sees it.
    """

    name = "lookup"

    def apply(self, sessions: beam.PCollection, accepted: beam.PCollection) -> FilteredSessions:
        side = []
        if not self.streaming:
            barrier = accepted | "AllRecorded" >> beam.combiners.Count.Globally()
            side = [beam.pvalue.AsSingleton(barrier)]
        filtered = sessions | "LookUpForgotten" >> beam.ParDo(
            _LookupFn(self.config.registry_url, self.config.registry_retry_s), *side
        ).with_outputs(SUPPRESSED_TAG, main=CLEAN_TAG)
        return FilteredSessions(filtered[CLEAN_TAG], filtered[SUPPRESSED_TAG], effective_after(accepted, 0))
