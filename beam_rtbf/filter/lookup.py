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
from beam_rtbf.filter.suppress import split_batch
from beam_rtbf.records import ALIAS_COLUMNS
from beam_rtbf.registry import open_registry
from beam_rtbf.registry.record import with_retries

__all__ = ["FilterSessionsByLookup", "distinct_ids", "RegistryConfirmer"]

SUPPRESSED_TAG = "suppressed"


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
        self._clean = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.SESSIONS_CLEAN)
        self._suppressed = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.SESSIONS_SUPPRESSED)

    def setup(self) -> None:
        self._confirmer = RegistryConfirmer(self._registry_url, self._retry_budget_s)

    def process(self, batch: pa.RecordBatch, *unused_barrier) -> Iterable:
        clean, suppressed = split_batch(batch, self._confirmer.forgotten_among(distinct_ids(batch)))
        if suppressed:
            self._suppressed.inc(suppressed)
            yield beam.pvalue.TaggedOutput(SUPPRESSED_TAG, suppressed)
        if clean.num_rows:
            self._clean.inc(clean.num_rows)
            yield clean

    def teardown(self) -> None:
        self._confirmer.close()


class FilterSessionsByLookup(beam.PTransform):
    """Drop forgotten sessions by one registry membership query per batch.

    ``barrier`` (bounded runs): a singleton side input computed from this run's
    accepted requests, so no batch is looked up before they are all recorded.
    """

    def __init__(self, registry_url: str, retry_budget_s: float = 120.0, barrier=None) -> None:
        super().__init__()
        self._registry_url = registry_url
        self._retry_budget_s = retry_budget_s
        self._barrier = barrier

    def expand(self, sessions):
        side = [beam.pvalue.AsSingleton(self._barrier)] if self._barrier is not None else []
        return sessions | "LookUpForgotten" >> beam.ParDo(
            _LookupFn(self._registry_url, self._retry_budget_s), *side
        ).with_outputs(SUPPRESSED_TAG, main="clean")
