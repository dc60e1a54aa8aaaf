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
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils import shared
from apache_beam.utils.timestamp import Timestamp

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.filter.broadcast import SUPPRESSED_TAG, _SharedFollower
from beam_rtbf.filter.deletion_set import DeletionSet, hash_ids
from beam_rtbf.filter.follower import RegistryFollower
from beam_rtbf.filter.suppress import split_batch
from beam_rtbf.records import AcceptedRequest, now_ms

__all__ = ["FilterSessionsInKeyedState", "EFFECTIVE_TAG"]

EFFECTIVE_TAG = "effective"

# Per-process cache of each shard's request set, rebuilt only when its bag grows.
_SHARD_SETS: dict[tuple[str, int], tuple[int, DeletionSet]] = {}
_SHARD_LOCK = threading.Lock()


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


class _StateFilterFn(beam.DoFn):
    REQUESTS = BagStateSpec("requests", PickleCoder())
    REQUEST_COUNT = ReadModifyWriteStateSpec("request_count", VarIntCoder())
    HELD = BagStateSpec("held", PickleCoder())
    RETRY = TimerSpec("retry", TimeDomain.REAL_TIME)

    def __init__(self, registry_url: str, refresh_interval_s: float, max_staleness_s: float) -> None:
        self._registry_url = registry_url
        self._refresh_interval_s = refresh_interval_s
        self._max_staleness_s = max_staleness_s
        self._step_id = uuid.uuid4().hex
        self._shared = shared.Shared()
        self._clean = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.SESSIONS_CLEAN)
        self._suppressed = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.SESSIONS_SUPPRESSED)
        self._held = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.SESSIONS_HELD)
        self._effective_ms = Metrics.distribution(rtbf_metrics.NAMESPACE, rtbf_metrics.EFFECTIVENESS_MS)

    def setup(self) -> None:
        url, interval, staleness = self._registry_url, self._refresh_interval_s, self._max_staleness_s
        self._follower = self._shared.acquire(
            lambda: _SharedFollower(RegistryFollower(url, interval, staleness)),
            tag=f"follow:{url}:{interval}:{staleness}",
        ).follower

    def _shard_set(self, shard: int, count: int, requests_state) -> DeletionSet:
        key = (self._step_id, shard)
        with _SHARD_LOCK:
            cached = _SHARD_SETS.get(key)
        if cached is not None and cached[0] == count:
            return cached[1]
        ids = [subject for subjects in requests_state.read() for subject in subjects]
        built = DeletionSet.of(ids)
        with _SHARD_LOCK:
            _SHARD_SETS[key] = (count, built)
        return built

    def _filter(self, batch: pa.RecordBatch, registry_set: DeletionSet, shard_set: DeletionSet):
        clean, suppressed_registry = split_batch(batch, registry_set)
        clean, suppressed_state = split_batch(clean, shard_set)
        suppressed = suppressed_registry + suppressed_state
        if suppressed:
            self._suppressed.inc(suppressed)
        if clean.num_rows:
            self._clean.inc(clean.num_rows)
        return clean, suppressed

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
        clean, suppressed = self._filter(
            batch, registry_set, self._shard_set(shard, count_state.read() or 0, requests_state)
        )
        if suppressed:
            yield beam.pvalue.TaggedOutput(SUPPRESSED_TAG, suppressed)
        if clean.num_rows:
            yield clean

    def _release_held(self, registry_set, shard, requests_state, count_state, held_state) -> Iterator:
        held = list(held_state.read())
        if not held:
            return
        held_state.clear()
        shard_set = self._shard_set(shard, count_state.read() or 0, requests_state)
        for batch, micros in held:
            clean, suppressed = self._filter(batch, registry_set, shard_set)
            if suppressed:
                yield beam.pvalue.TaggedOutput(SUPPRESSED_TAG, suppressed)
            if clean.num_rows:
                yield window.TimestampedValue(clean, Timestamp(micros=micros))

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


class FilterSessionsInKeyedState(beam.PTransform):
    """(sessions, accepted requests) -> clean batches; outputs ``suppressed`` counts and
    ``effective`` (AcceptedRequest, effective_at_ms) once all shards apply a request."""

    def __init__(
        self,
        accepted,
        registry_url: str,
        shards: int = 4,
        refresh_interval_s: float = 1.0,
        max_staleness_s: float = 30.0,
    ) -> None:
        super().__init__()
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self._accepted = accepted
        self._registry_url = registry_url
        self._shards = shards
        self._refresh_interval_s = refresh_interval_s
        self._max_staleness_s = max_staleness_s

    def expand(self, sessions):
        shards = self._shards
        keyed_sessions = sessions | "ShardBySubject" >> beam.ParDo(_ShardSessions(shards))
        keyed_requests = self._accepted | "SendToEveryShard" >> beam.FlatMap(
            lambda accepted: [(shard, accepted) for shard in range(shards)]
        )
        results = (
            (keyed_sessions, keyed_requests)
            | "JoinStreams" >> beam.Flatten()
            | "DropForgottenInState"
            >> beam.ParDo(
                _StateFilterFn(self._registry_url, self._refresh_interval_s, self._max_staleness_s)
            ).with_outputs(SUPPRESSED_TAG, EFFECTIVE_TAG, main="clean")
        )
        effective = (
            results[EFFECTIVE_TAG]
            | "KeyByRequest" >> beam.Map(lambda e: (e[0], e))
            | "WaitForAllShards" >> beam.ParDo(_CollectEffective(shards))
        )
        return {"clean": results.clean, SUPPRESSED_TAG: results[SUPPRESSED_TAG], EFFECTIVE_TAG: effective}
