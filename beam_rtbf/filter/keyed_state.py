"""The ``state`` strategy: requests and sessions joined in Beam keyed state.

Sessions are sharded by a hash of the user id into ``shards`` keys; every
accepted request is sent to every shard (requests are rare, and aliases such
as an email may sit on any shard). Each shard keeps the requests it has seen in
a bag, so a request takes effect the moment its shard processes it, in stream
order, with no side input. This is the streaming form that runs on every
runner, local ones included, and it also follows the registry by deltas (so a
``beam-rtbf forget`` from outside the pipeline takes effect too).

Fail closed: when the registry cannot be read for longer than
``max_staleness_s``, session batches are held in state and a processing-time
timer retries; nothing passes unfiltered.

Each shard's request set is rebuilt only when its bag grows: the built sets are
cached per worker process through ``apache_beam.utils.shared`` (``_ShardSets``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils import shared
from apache_beam.utils.timestamp import Timestamp

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.filter.deletion_set import DeletionSet, hash_ids
from beam_rtbf.filter.follower import SharedFollower
from beam_rtbf.filter.outputs import CLEAN_TAG, EFFECTIVE_TAG, SUPPRESSED_TAG, FilteredSessions, SplitCounters
from beam_rtbf.filter.strategy import FilterConfig, FilterStrategy
from beam_rtbf.filter.suppress import split_batch
from beam_rtbf.records import AcceptedRequest, now_ms

__all__ = ["KeyedStateStrategy", "DropForgottenInStateFn"]


class _ShardSessions(beam.DoFn):
    def __init__(self, shards: int) -> None:
        self._shards = shards

    def process(self, batch: pa.RecordBatch) -> Iterator[tuple[int, pa.RecordBatch]]:
        if self._shards == 1:
            yield 0, batch
            return
        shard_of_row = hash_ids(batch.column("user_id")) % np.uint64(self._shards)
        for shard in range(self._shards):
            rows = np.flatnonzero(shard_of_row == shard)
            if rows.size:
                yield shard, batch.take(pa.array(rows))


class _ShardSets:
    """Each shard's request set with the request count it was built from (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sets: dict[int, tuple[int, DeletionSet]] = {}

    def get(self, shard: int, count: int, build: Callable[[], DeletionSet]) -> DeletionSet:
        """The cached set if it was built from ``count`` requests, else ``build()`` (then cached)."""
        with self._lock:
            cached = self._sets.get(shard)
        if cached is not None and cached[0] == count:
            return cached[1]
        built = build()
        with self._lock:
            self._sets[shard] = (count, built)
        return built


class DropForgottenInStateFn(beam.DoFn):
    """Keyed by shard: requests go into the shard's bag, session batches are split by
    the registry set (followed by deltas) and the shard's request set.

    Outputs clean batches, ``suppressed`` counts, and ``effective``
    (request_id, shard, applied_at_ms, AcceptedRequest) when a shard applies a request.
    While the registry is too stale, batches are held in state and a timer retries.
    """

    REQUESTS = BagStateSpec("requests", PickleCoder())
    REQUEST_COUNT = ReadModifyWriteStateSpec("request_count", VarIntCoder())
    HELD = BagStateSpec("held", PickleCoder())
    RETRY = TimerSpec("retry", TimeDomain.REAL_TIME)

    def __init__(self, registry_url: str, refresh_interval_s: float, max_staleness_s: float) -> None:
        self._registry_url = registry_url
        self._refresh_interval_s = refresh_interval_s
        self._max_staleness_s = max_staleness_s
        self._shared_follower = shared.Shared()
        self._shared_sets = shared.Shared()
        self._counters = SplitCounters()
        self._held = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.SESSIONS_HELD)
        self._effective_ms = Metrics.distribution(rtbf_metrics.NAMESPACE, rtbf_metrics.EFFECTIVENESS_MS)

    def setup(self) -> None:
        self._follower_holder = SharedFollower.acquire(
            self._shared_follower, self._registry_url, self._refresh_interval_s, self._max_staleness_s
        )
        self._follower = self._follower_holder.follower
        self._shard_sets: _ShardSets = self._shared_sets.acquire(_ShardSets)

    def _shard_set(self, shard: int, count: int, requests_state) -> DeletionSet:
        def build() -> DeletionSet:
            return DeletionSet.of([subject for subjects in requests_state.read() for subject in subjects])

        return self._shard_sets.get(shard, count, build)

    def _filter(
        self, batch: pa.RecordBatch, registry_set: DeletionSet, shard_set: DeletionSet, timestamp: Timestamp | None
    ) -> Iterator:
        clean, suppressed_registry = split_batch(batch, registry_set)
        clean, suppressed_state = split_batch(clean, shard_set)
        yield from self._counters.emit(clean, suppressed_registry + suppressed_state, timestamp)

    def process(
        self,
        element: tuple[int, object],
        timestamp=beam.DoFn.TimestampParam,
        requests_state=beam.DoFn.StateParam(REQUESTS),
        count_state=beam.DoFn.StateParam(REQUEST_COUNT),
        held_state=beam.DoFn.StateParam(HELD),
        retry=beam.DoFn.TimerParam(RETRY),
    ) -> Iterable:
        shard, value = element
        if isinstance(value, AcceptedRequest):
            requests_state.add(value.request.subject_ids)
            count_state.write((count_state.read() or 0) + 1)
            applied_at = now_ms()
            self._effective_ms.update(max(0, applied_at - value.accepted_at_ms))
            yield beam.pvalue.TaggedOutput(EFFECTIVE_TAG, (value.request.request_id, shard, applied_at, value))
            return
        batch: pa.RecordBatch = value
        registry_set = self._follower.current()
        if registry_set is None:
            # Fail closed: hold the batch until the registry can be read again.
            held_state.add((batch, int(timestamp.micros)))
            self._held.inc(batch.num_rows)
            retry.set(Timestamp.now() + self._refresh_interval_s)
            return
        yield from self._release_held(registry_set, shard, requests_state, count_state, held_state)
        shard_set = self._shard_set(shard, count_state.read() or 0, requests_state)
        yield from self._filter(batch, registry_set, shard_set, None)

    def _release_held(self, registry_set, shard, requests_state, count_state, held_state) -> Iterator:
        held = list(held_state.read())
        if not held:
            return
        held_state.clear()
        shard_set = self._shard_set(shard, count_state.read() or 0, requests_state)
        for batch, micros in held:
            yield from self._filter(batch, registry_set, shard_set, Timestamp(micros=micros))

    @on_timer(RETRY)
    def on_retry(
        self,
        key=beam.DoFn.KeyParam,
        requests_state=beam.DoFn.StateParam(REQUESTS),
        count_state=beam.DoFn.StateParam(REQUEST_COUNT),
        held_state=beam.DoFn.StateParam(HELD),
        retry=beam.DoFn.TimerParam(RETRY),
    ) -> Iterable:
        registry_set = self._follower.current(force=True)
        if registry_set is None:
            retry.set(Timestamp.now() + self._refresh_interval_s)
            return
        yield from self._release_held(registry_set, key, requests_state, count_state, held_state)


class _CollectEffective(beam.DoFn):
    """A request is effective once every shard applied it; emit (AcceptedRequest, effective_at_ms)."""

    SEEN = BagStateSpec("seen", PickleCoder())

    def __init__(self, shards: int) -> None:
        self._shards = shards

    def process(self, element, seen=beam.DoFn.StateParam(SEEN)):
        _, (_, shard, applied_at, accepted) = element
        seen.add((shard, applied_at))
        entries = list(seen.read())
        if len({s for s, _ in entries}) == self._shards:
            seen.clear()
            yield accepted, max(at for _, at in entries)


class KeyedStateStrategy(FilterStrategy):
    """(sessions, accepted requests) joined in keyed state; a request is effective once
    every shard has applied it (``effective_at_ms``: when the last one did)."""

    name = "state"

    def __init__(self, config: FilterConfig, streaming: bool) -> None:
        super().__init__(config, streaming)
        if config.state_shards < 1:
            raise ValueError("state_shards must be >= 1")

    def apply(self, sessions: beam.PCollection, accepted: beam.PCollection) -> FilteredSessions:
        config, shards = self.config, self.config.state_shards
        # int shard keys, declared so the stateful steps get a deterministic key coder
        keyed_sessions = sessions | "ShardBySubject" >> beam.ParDo(_ShardSessions(shards)).with_output_types(
            tuple[int, Any]
        )
        keyed_requests = accepted | "SendToEveryShard" >> beam.FlatMap(
            lambda accepted: [(shard, accepted) for shard in range(shards)]
        ).with_output_types(tuple[int, Any])
        results = (
            (keyed_sessions, keyed_requests)
            | "JoinStreams" >> beam.Flatten()
            | "DropForgottenInState"
            >> beam.ParDo(
                DropForgottenInStateFn(config.registry_url, config.refresh_interval_s, config.max_staleness_s)
            ).with_outputs(SUPPRESSED_TAG, EFFECTIVE_TAG, main=CLEAN_TAG)
        )
        effective = (
            results[EFFECTIVE_TAG]
            | "KeyByRequest" >> beam.Map(lambda e: (e[0], e)).with_output_types(tuple[str, Any])
            | "WaitForAllShards" >> beam.ParDo(_CollectEffective(shards))
        )
        return FilteredSessions(results[CLEAN_TAG], results[SUPPRESSED_TAG], effective)
