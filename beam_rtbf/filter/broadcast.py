"""The ``broadcast`` strategy: the deletion set as a side input of the session filter.

Bounded runs: the side input is the registry snapshot at start plus every
request accepted in this run, so the deletion set as of the run applies to
every session whatever its event time.

Streaming runs (Flink): a slowly updating side input. A tick every
``refresh_interval_s`` (``filter/refresh.py``: a timer while the sessions stream runs, or
Beam's ``PeriodicImpulse``) fetches only the registry delta since the last version and
re-emits the set into a global window with a per-element trigger. A set older than ``max_staleness_s`` fails the bundle
(the runner retries it) rather than pass sessions unfiltered.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.utils import shared

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.filter.deletion_set import DeletionSet, hash_ids
from beam_rtbf.filter.follower import SharedFollower
from beam_rtbf.filter.outputs import CLEAN_TAG, SUPPRESSED_TAG, FilteredSessions, SplitCounters
from beam_rtbf.filter.refresh import TICK_SOURCES, RefreshTicks
from beam_rtbf.filter.strategy import FilterConfig, FilterStrategy, effective_after
from beam_rtbf.filter.suppress import split_batch
from beam_rtbf.registry import open_registry
from beam_rtbf.registry.record import with_retries

__all__ = [
    "DeletionSetView",
    "BuildBoundedDeletionSet",
    "BuildStreamingDeletionSet",
    "build_deletion_set",
    "DropForgottenFn",
    "BroadcastStrategy",
    "StaleDeletionSet",
]


class StaleDeletionSet(RuntimeError):
    """The side input is older than its bound: retry later, never pass sessions unfiltered."""


@dataclasses.dataclass(frozen=True)
class DeletionSetView:
    """What travels in the side input: the set, its registry version and when it was read."""

    deletion_set: DeletionSet
    version: int
    fresh_at_s: float


class _UnionDeletionSets(beam.CombineFn):
    """Union of hash arrays; built once in extract_output, not per element."""

    def create_accumulator(self):
        return ([], 0)

    def add_input(self, acc, ds: DeletionSet):
        parts, version = acc
        parts.append(ds.hashes)
        return parts, max(version, ds.version)

    def merge_accumulators(self, accs):
        parts, version = [], 0
        for p, v in accs:
            parts.extend(p)
            version = max(version, v)
        return parts, version

    def extract_output(self, acc):
        parts, version = acc
        hashes = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)
        return DeletionSetView(DeletionSet(hashes, version), version, time.time())


class _ReadSnapshot(beam.DoFn):
    def __init__(self, registry_url: str) -> None:
        self._registry_url = registry_url

    def process(self, _unused) -> Iterator[DeletionSet]:
        def read():
            with open_registry(self._registry_url) as registry:
                return registry.snapshot()

        snapshot = with_retries(read)
        yield DeletionSet(hash_ids(list(snapshot.subject_ids)), snapshot.to_version)


class BuildBoundedDeletionSet(beam.PTransform):
    """Registry snapshot at start + this run's accepted requests -> one DeletionSetView."""

    def __init__(self, registry_url: str) -> None:
        super().__init__()
        self._registry_url = registry_url

    def expand(self, accepted):
        snapshot = (
            accepted.pipeline
            | "StartSnapshot" >> beam.Impulse()
            | "ReadRegistrySnapshot" >> beam.ParDo(_ReadSnapshot(self._registry_url))
        )
        from_requests = accepted | "RequestSubjects" >> beam.Map(
            lambda a: DeletionSet(hash_ids(list(a.request.subject_ids)), a.version)
        )
        return (
            (snapshot, from_requests)
            | "MergeSources" >> beam.Flatten()
            | "UnionDeletionSet" >> beam.CombineGlobally(_UnionDeletionSets())
        )


class _FetchDelta(beam.DoFn):
    def __init__(self, registry_url: str, max_staleness_s: float) -> None:
        self._registry_url = registry_url
        self._max_staleness_s = max_staleness_s
        self._shared = shared.Shared()

    def setup(self) -> None:
        self._holder = SharedFollower.acquire(self._shared, self._registry_url, 0.0, self._max_staleness_s)
        self._follower = self._holder.follower

    def process(self, _tick) -> Iterator[DeletionSetView]:
        current = self._follower.current(force=True)
        if current is not None:
            yield DeletionSetView(current, current.version, time.time() - self._follower.age_s())


class BuildStreamingDeletionSet(beam.PTransform):
    """A slowly updating side input: a delta fetch per tick, re-emitted into the global window.

    The ticks come from ``RefreshTicks`` over the sessions (they end with the sessions stream) or,
    with ``refresh_ticks="periodic_impulse"``, from Beam's PeriodicImpulse (it never ends)."""

    def __init__(
        self,
        registry_url: str,
        refresh_interval_s: float,
        max_staleness_s: float,
        sessions: beam.PCollection | None = None,
        refresh_ticks: str = "sessions",
    ) -> None:
        super().__init__()
        if refresh_ticks not in TICK_SOURCES:
            raise ValueError(f"refresh_ticks must be one of {TICK_SOURCES}, not {refresh_ticks!r}")
        if refresh_ticks == "sessions" and sessions is None:
            raise ValueError("refresh ticks from the sessions need the sessions PCollection")
        self._registry_url = registry_url
        self._refresh_interval_s = refresh_interval_s
        self._max_staleness_s = max_staleness_s
        self._sessions = sessions
        self._refresh_ticks = refresh_ticks

    def expand(self, pbegin):
        if self._refresh_ticks == "sessions":
            ticks = self._sessions | "RefreshTicks" >> RefreshTicks(self._refresh_interval_s)
        else:
            from apache_beam.transforms.periodicsequence import PeriodicImpulse

            ticks = pbegin | "RefreshTicks" >> PeriodicImpulse(
                fire_interval=self._refresh_interval_s, apply_windowing=False
            )
        return (
            ticks
            | "FetchRegistryDelta" >> beam.ParDo(_FetchDelta(self._registry_url, self._max_staleness_s))
            | "LatestSetGlobally"
            >> beam.WindowInto(
                window.GlobalWindows(),
                trigger=trigger.Repeatedly(trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
            )
        )


def build_deletion_set(
    accepted: beam.PCollection, config: FilterConfig, streaming: bool, sessions: beam.PCollection | None = None
) -> tuple[beam.PCollection, int]:
    """The ``DeletionSet`` side input of the broadcast and bloom strategies, and its lag in ms.

    Bounded: the snapshot at start plus this run's requests, so no lag. Streaming: a request is
    in every set read from the registry after it was accepted, but when the filter sees that set
    is up to the runner (on Flink the new set reached the filter up to ~6 s after a 1 s refresh;
    sessions already in a bundle keep the old one). The one bound the filter enforces is
    ``max_staleness_s`` (an older set fails the bundle), so that is the lag a manifest states.
    """
    if streaming:
        view = accepted.pipeline | "DeletionSet" >> BuildStreamingDeletionSet(
            config.registry_url, config.refresh_interval_s, config.max_staleness_s, sessions, config.refresh_ticks
        )
        return view, int(config.max_staleness_s * 1000)
    return accepted | "DeletionSet" >> BuildBoundedDeletionSet(config.registry_url), 0


class DropForgottenFn(beam.DoFn):
    """Split each batch by the DeletionSetView side input; fail the bundle if the view is too old.

    ``max_staleness_s=None`` (bounded runs) never checks the age: the view is built once for the run.
    """

    def __init__(self, max_staleness_s: float | None) -> None:
        self._max_staleness_s = max_staleness_s
        self._counters = SplitCounters()
        self._age = Metrics.distribution(rtbf_metrics.NAMESPACE, rtbf_metrics.SIDE_INPUT_AGE_MS)

    def process(self, batch: pa.RecordBatch, view: DeletionSetView, _window=beam.DoFn.WindowParam) -> Iterable:
        # ``_window`` is what keeps the side input fresh: without a window parameter Beam's Python
        # invoker reads a global-window side input once and reuses it for the DoFn's lifetime
        # (apache/beam#28776; the opt-out experiment disable_global_windowed_args_caching is not
        # seen by LOOPBACK workers), so on Flink the set stayed at its first version.
        if self._max_staleness_s is not None:
            age_s = time.time() - view.fresh_at_s
            self._age.update(int(age_s * 1000))
            if age_s > self._max_staleness_s:
                raise StaleDeletionSet(
                    f"deletion set version {view.version} is {age_s:.1f}s old "
                    f"(bound {self._max_staleness_s}s); holding sessions until it refreshes"
                )
        yield from self._counters.emit(*split_batch(batch, view.deletion_set))


class BroadcastStrategy(FilterStrategy):
    """The whole deletion set as a side input of the session filter.

    Main output: clean batches. ``suppressed`` output: counts only (forgotten
    data is never emitted anywhere).
    """

    name = "broadcast"
    refreshes_side_input = True

    def apply(self, sessions: beam.PCollection, accepted: beam.PCollection) -> FilteredSessions:
        view, lag_ms = build_deletion_set(accepted, self.config, self.streaming, sessions)
        max_staleness_s = self.config.max_staleness_s if self.streaming else None
        filtered = sessions | "DropForgotten" >> beam.ParDo(
            DropForgottenFn(max_staleness_s), beam.pvalue.AsSingleton(view)
        ).with_outputs(SUPPRESSED_TAG, main=CLEAN_TAG)
        return FilteredSessions(filtered[CLEAN_TAG], filtered[SUPPRESSED_TAG], effective_after(accepted, lag_ms))
