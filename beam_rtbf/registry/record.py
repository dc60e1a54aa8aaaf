"""Beam step: record erasure requests in the registry, durably and idempotently.

Retry policy: ``RegistryUnavailable`` is transient; the step retries with
exponential backoff and jitter, then raises so the runner retries the bundle.
A request becomes effective only after the registry accepted it.

A request id the registry already holds for other subjects is a conflict, not
a duplicate: it goes to the dead letters with the reason (the registry keeps
the first request; the second subject must be submitted under its own id).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.bundling import BundleDoFn
from beam_rtbf.records import AcceptedRequest, DeadLetter, ErasureRequest
from beam_rtbf.registry import RegistryUnavailable, open_registry

__all__ = ["RecordRequests", "with_retries", "CONFLICT_TAG", "is_conflict", "CONFLICT_REASON"]

CONFLICT_TAG = "conflict"
CONFLICT_REASON = "request_id already registered for a different subject (conflict): not accepted"


def is_conflict(request: ErasureRequest, accepted: AcceptedRequest) -> bool:
    """A request id seen before that names an identifier the first request under it did not.

    A retry naming the same identifiers, or fewer (an alias left out), is a duplicate: the
    registry already forgets all of them. Anything more would silently not be forgotten.
    """
    return accepted.duplicate and not set(request.subject_ids) <= set(accepted.request.subject_ids)


_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")


def with_retries(
    call: Callable[[], T], budget_s: float = 120.0, base_delay_s: float = 0.1, max_delay_s: float = 5.0
) -> T:
    """Run ``call``, retrying ``RegistryUnavailable`` with full-jitter exponential backoff.

    Gives up (re-raises) once ``budget_s`` has passed: the runner then retries the
    bundle or fails the job, and nothing is passed unfiltered in the meantime.
    """
    deadline = time.monotonic() + budget_s
    attempt = 0
    while True:
        try:
            return call()
        except RegistryUnavailable as exc:
            if time.monotonic() >= deadline:
                raise
            delay = min(random.uniform(0, min(max_delay_s, base_delay_s * 2**attempt)), deadline - time.monotonic())
            attempt += 1
            _LOGGER.warning("registry unavailable (%s); retry %d in %.2fs", exc, attempt, max(delay, 0))
            time.sleep(max(delay, 0))


class _RecordRequestsFn(BundleDoFn):
    """One atomic ``add`` per bundle (one round trip, one transaction)."""

    def __init__(self, registry_url: str, retry_budget_s: float) -> None:
        self._registry_url = registry_url
        self._retry_budget_s = retry_budget_s
        self._registry = None
        self._accepted = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.REQUESTS_ACCEPTED)
        self._duplicate = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.REQUESTS_DUPLICATE)
        self._errors = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.REGISTRY_ERRORS)
        self._dead = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.REQUESTS_DEAD_LETTERED)

    def setup(self) -> None:
        self._registry = with_retries(lambda: open_registry(self._registry_url), self._retry_budget_s)

    def handle_batch(self, requests: Sequence[ErasureRequest]) -> list[list]:
        try:
            results = with_retries(lambda: self._registry.add(list(requests)), self._retry_budget_s)
        except RegistryUnavailable:
            self._errors.inc()
            raise
        outputs: list[list] = []
        for request, accepted in zip(requests, results, strict=True):
            if is_conflict(request, accepted):
                self._dead.inc()
                raw = json.dumps(request.to_dict(), sort_keys=True).encode()
                letter = DeadLetter("requests", "registry", f"request_id={request.request_id}", CONFLICT_REASON, raw)
                outputs.append([beam.pvalue.TaggedOutput(CONFLICT_TAG, letter)])
                continue
            (self._duplicate if accepted.duplicate else self._accepted).inc()
            outputs.append([accepted])
        return outputs

    def teardown(self) -> None:
        if self._registry is not None:
            self._registry.close()


class RecordRequests(beam.PTransform):
    """ErasureRequest -> AcceptedRequest (``duplicate=True`` for a request id seen before);
    the ``conflict`` output holds dead letters for ids registered to other subjects."""

    def __init__(self, registry_url: str, retry_budget_s: float = 120.0) -> None:
        super().__init__()
        self._registry_url = registry_url
        self._retry_budget_s = retry_budget_s

    def expand(self, requests):
        return requests | "AddToRegistry" >> beam.ParDo(
            _RecordRequestsFn(self._registry_url, self._retry_budget_s)
        ).with_outputs(CONFLICT_TAG, main="accepted")
