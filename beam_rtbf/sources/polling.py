"""``ReadFromPoller``: one streaming read over a ``Poller``, in the form each runner needs.

- Portable runners (Flink, the FnApiRunner): a splittable DoFn that polls,
  reports its watermark through a ManualWatermarkEstimator and checkpoints
  (``defer_remainder``) when the source has nothing. Its restriction holds the
  poller's own checkpoint (shard sequence numbers, partition offsets), so the
  residual resumes exactly after what was emitted, on any worker.
- The local streaming runner (``beam_rtbf.local_runner``): replaced by a
  polling root evaluator, because the BundleBasedDirectRunner cannot run
  splittable DoFns and holds their watermark at -inf until they finish.
  It replaces the whole composite, sharded or not, by one poller over the
  whole stream (``make_poller``).

Sharded sources (``ShardedPollers``: Kinesis shards, Kafka partitions,
``synthetic://sessions?shards=N``) expand, on portable runners, to

    Impulse -> Discover -> Reshuffle -> ReadShard

- ``Discover`` (splittable, one restriction: the ids listed so far) lists the
  units every ``discovery_interval_s`` and emits each new *root* (a unit with
  no known parent: every Kafka partition, every Kinesis shard at start, a new
  partition added while running) exactly once, claiming the grown set of ids
  before emitting. A root first listed at discovery N is emitted with the
  timestamp of discovery N-1 (it did not exist then, so its data is not older)
  and only then does the step's watermark move to the time of discovery N: it
  never holds the read's watermark back for longer than one interval.
- ``Reshuffle`` spreads the roots over workers.
- ``ReadShard`` (splittable, one restriction per root: that root's poller
  checkpoint) reads one root and its descendants, polls, defers when idle and
  reports its watermark; the read's output watermark is the minimum over the
  roots (the runner computes it).

Parents before children, across workers: a Kinesis child (split or merge) is
never a restriction of its own. It is read by the reader of its first known
parent (``ParentShardId``), in the same poller, only after that parent was
read to SHARD_END; that is the ordering the whole-stream poller already had.
So per-key order holds across every split, and across a merge for the keys of
the parent shard; for the adjacent parent of a merge (read elsewhere) it holds
only if that reader has caught up when the merge happens (the same guarantee
as Beam Java's KinesisIO). The cost: a split does not add a reader; the
children stay with their parent's.

Stopping the splittable form: when the SDK workers run in this process (Prism's LOOPBACK
environment), ``stop_reads_on(pipeline, stop)`` gives the pipeline's reads a token of this run;
once ``stop.requested``, each read closes its poller (which checkpoints the source) and ends
its restriction, so its watermark moves to the end, every window closes and the job finishes
with complete outputs for what was read (the sharded form's discovery and shard reads too).
Workers in other processes never see the request.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from typing import Protocol

import apache_beam as beam
from apache_beam.internal import pickler
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms import window
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from beam_rtbf.sources.poller import Poller, ShardedPollers, roots_of

__all__ = ["ReadFromPoller", "ReadPacing", "stop_reads_on", "stop_requested", "release_stop"]


class _Stop(Protocol):
    """What a read needs of a stop request (``local_runner.StopRequest``)."""

    @property
    def requested(self) -> bool: ...


# The stop requests of the runs whose SDK workers run in this process, by token: the reads
# (unpickled in a worker of this process) find their run's request through the token they carry.
_STOPS: dict[str, _Stop] = {}
_STOPS_LOCK = threading.Lock()


def stop_reads_on(pipeline: beam.Pipeline, stop: _Stop) -> str:
    """Make every ``ReadFromPoller`` of ``pipeline`` end when ``stop`` is requested; returns the
    run's token (give it to ``release_stop`` when the run is over). Call before ``pipeline.run()``."""
    token = uuid.uuid4().hex
    with _STOPS_LOCK:
        _STOPS[token] = stop

    class Mark(beam.pipeline.PipelineVisitor):
        def visit_transform(self, applied) -> None:
            fn = getattr(applied.transform, "fn", None)
            if isinstance(fn, (_PollFn, _DiscoverFn, _ReadShardFn)):
                fn.stop_token = token

    pipeline.visit(Mark())
    return token


def release_stop(token: str) -> None:
    with _STOPS_LOCK:
        _STOPS.pop(token, None)


def stop_requested(token: str | None) -> bool:
    """Whether the run of ``token`` asked its reads to stop (False for no token or a released one)."""
    if token is None:
        return False
    with _STOPS_LOCK:
        stop = _STOPS.get(token)
    return stop is not None and stop.requested


@dataclasses.dataclass(frozen=True)
class PollerPosition:
    """A restriction: the reader's checkpoint where this piece of work starts; ``done`` once ended."""

    state: dict
    done: bool = False


class PositionTracker(RestrictionTracker):
    """Tracks an open-ended read by the poller's checkpoints.

    ``try_claim(state)`` records progress; ``try_claim(None)`` marks the source
    ended. A split (a checkpoint by the runner) ends this restriction where it
    stands and hands the rest on as a residual that starts at the last claimed
    checkpoint, so a resume on any worker continues exactly after what was
    emitted.
    """

    def __init__(self, restriction: PollerPosition) -> None:
        self._restriction = restriction
        self._current = restriction.state
        self._ended = restriction.done
        self._split = False

    def current_restriction(self) -> PollerPosition:
        return self._restriction

    def current_state(self) -> dict:
        return self._current

    def try_claim(self, state: dict | None) -> bool:
        if self._split or self._ended:
            return False
        if state is None:
            self._ended = True
        else:
            self._current = state
        return True

    def try_split(self, fraction_of_remainder: float):
        # Only a checkpoint (fraction 0: defer_remainder, a runner's checkpoint) splits an open-ended
        # read: its remainder cannot be halved, both halves would read the same stream. Prism asks
        # for 0.5 of any bundle that shows no progress between two reports; such a residual would
        # resume from the last claimed checkpoint beside the still-running primary (a source with
        # no checkpoint, synthetic://, would start over: thousands of extra sessions).
        if self._split or self._ended or fraction_of_remainder > 0:
            return None
        self._split = True
        primary = PollerPosition(self._restriction.state, done=True)
        residual = PollerPosition(self._current, done=False)
        self._restriction = primary
        return primary, residual

    def current_progress(self) -> RestrictionProgress | None:
        """None: an open-ended read has no measurable progress (Beam then assumes half an element).

        Runners that ask for bundle progress and split slow bundles (Prism, every few seconds)
        call this; Beam's default raises NotImplementedError, logged as a failed progress request.
        Not a ``RestrictionProgress(completed=0, remaining=1)`` either: Beam 2.77 replaces
        ``completed`` with the step's output bytes, NaN before its first byte sample, and a split
        request then fails the bundle (``ValueError: cannot convert float NaN to integer``).
        """
        return None

    def check_done(self) -> None:
        if not (self._split or self._ended):
            raise ValueError("the poller restriction ended without reaching the end or a checkpoint")

    def is_bounded(self) -> bool:
        return False


class _PollRestrictions(RestrictionProvider):
    def initial_restriction(self, element) -> PollerPosition:
        return PollerPosition({})

    def create_tracker(self, restriction: PollerPosition) -> PositionTracker:
        return PositionTracker(restriction)

    def restriction_size(self, element, restriction: PollerPosition) -> int:
        return 0 if restriction.done else 1


@dataclasses.dataclass(frozen=True)
class ReadPacing:
    """How a splittable read spends one call (``_poll_rounds`` says why each knob exists).

    ``poll_interval_s``: the pause after an empty poll, and the deferral when a call ends with
    more to read; ``polls_per_call``: the polls a call makes while data flows; ``call_s``: the least
    time a call polls before deferring; ``end_call_on_data``: end the call right after a poll that
    read something; ``gather_s``: the pause after a poll that read something."""

    poll_interval_s: float = 0.05
    polls_per_call: int = 100
    call_s: float = 1.0
    end_call_on_data: bool = False
    gather_s: float = 0.0


def _advance(watermark: ManualWatermarkEstimator, ms: int | None) -> None:
    """Move the watermark to ``ms`` if that is later (a source's own estimate may step back)."""
    if ms is None:
        return
    new = Timestamp(micros=ms * 1000)
    current = watermark.current_watermark()
    if current is None or new > current:
        watermark.set_watermark(new)


def _poll_rounds(
    poller: Poller,
    tracker: PositionTracker,
    watermark: ManualWatermarkEstimator,
    pacing: ReadPacing,
    stop_token: str | None,
) -> Generator[window.TimestampedValue, None, str]:
    """Polls of one restriction for at least ``call_s`` seconds (pausing ``poll_interval_s`` after an
    empty poll) and ``polls_per_call`` polls while data flows: yields what they read, claims each checkpoint,
    moves the watermark. With ``call_s=0``, up to ``polls_per_call`` polls, ending at the first empty one.
    With ``end_call_on_data``, the call also ends right after a poll that read something (however short
    the call was): on Flink what a call yields leaves its stage only when the call ends (the SDK
    sends a bundle's outputs at its end, the runner emits them when the bundle closes, and bundle
    DoFns downstream in the same stage, the registry commit of RecordRequests, run then), so a
    latency-critical read (requests) does not sit up to ``call_s`` on what it read.
    With ``gather_s``, a poll that read something is followed by a pause of that long (within the
    call's time), and the call ends at ``call_s`` whatever ``polls_per_call``: for the same reason, pausing
    costs a read that does not end its call on data no latency, and each poll gathers that much
    more. Polled back to back, a read of 5,000 sessions/s made a batch of ~90 every ~37 ms, each
    element with its per-element cost in every stage; and 100 polls took ~3.7 s per call.

    Why a minimum call time: every deferred remainder is a residual the runner stores. Beam's Flink
    runner (2.62) keeps each one in its checkpointed state for good and rounds a sub-second defer to
    no delay (apache/beam#27648: checkpoints of polling splittable DoFns grow without bound), so an
    idle read deferring every 50 ms grew the checkpoint by megabytes a minute; one residual per
    ``call_s`` bounds that growth's rate.

    Returns how it ended: "stopped" (this run's stop request: the restriction ends, the caller
    closes the poller), "done" (the source ended), "split" (the runner took the rest), or "more"
    (idle or out of time and rounds: the caller defers the remainder)."""
    call_s, rounds, gather_s = pacing.call_s, pacing.polls_per_call, pacing.gather_s
    until = time.monotonic() + call_s
    polls = 0
    while True:
        if stop_requested(stop_token):
            tracker.try_claim(None)  # the read ends here: its watermark moves to the end
            return "stopped"
        result = poller.poll()
        polls += 1
        for element, ts_ms in result.elements:
            yield window.TimestampedValue(element, Timestamp(micros=ts_ms * 1000))
        if result.done:
            tracker.try_claim(None)
            return "done"
        if not tracker.try_claim(poller.checkpoint()):
            return "split"
        _advance(watermark, result.watermark_ms)
        if pacing.end_call_on_data and result.elements:
            return "more"
        left = until - time.monotonic()
        if left <= 0 and (polls >= rounds or not result.elements or gather_s > 0):
            return "more"
        if not result.elements:
            time.sleep(min(pacing.poll_interval_s, left))
        elif gather_s > 0 and left > 0:
            time.sleep(min(gather_s, left))


class _PollFn(beam.DoFn):
    def __init__(self, make_poller: Callable[[], Poller], pacing: ReadPacing) -> None:
        self._make_poller = make_poller
        self._pacing = pacing
        self._poller: Poller | None = None
        self.stop_token: str | None = None  # set by stop_reads_on: this run's stop request, in-process workers

    def _poller_at(self, state: dict) -> Poller:
        """This instance's open poller if it stands at ``state``, else a new one resumed there."""
        if self._poller is not None and self._poller.checkpoint() == state:
            return self._poller
        if self._poller is not None:
            self._poller.close()
        poller = self._make_poller()
        if state:
            poller.restore(state)
        poller.open()
        self._poller = poller
        return poller

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        _impulse,
        tracker=beam.DoFn.RestrictionParam(_PollRestrictions()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ) -> Iterator:
        position: PollerPosition = tracker.current_restriction()
        if position.done:
            return
        poller = self._poller_at(position.state)
        ended = yield from _poll_rounds(
            poller,
            tracker,
            watermark,
            self._pacing,
            self.stop_token,
        )
        if ended == "stopped":
            self._close()  # checkpoints the source where it stands
        elif ended == "more":
            tracker.defer_remainder(Duration.of(self._pacing.poll_interval_s))

    def _close(self) -> None:
        if self._poller is not None:
            poller, self._poller = self._poller, None
            poller.close()

    def teardown(self) -> None:
        self._close()


class _DiscoverFn(beam.DoFn):
    """Lists the stream's units every ``discovery_interval_s``; emits each new root once.

    Its restriction's state is ``{"seen": [ids listed so far], "quiet_since_ms": t}``; the grown
    set is claimed before the new roots are emitted, so a root is emitted by exactly one claim."""

    def __init__(self, shards: ShardedPollers) -> None:
        self._shards = shards
        self.stop_token: str | None = None  # set by stop_reads_on

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        _impulse,
        tracker=beam.DoFn.RestrictionParam(_PollRestrictions()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ) -> Iterator:
        position: PollerPosition = tracker.current_restriction()
        if position.done:
            return
        if stop_requested(self.stop_token):
            tracker.try_claim(None)  # no new roots after a stop: the step's watermark moves to the end
            return
        first = "seen" not in position.state
        seen = set(position.state.get("seen", ()))
        now = int(time.time() * 1000)
        quiet_since = position.state.get("quiet_since_ms", now)
        listed = self._shards.discover()
        new = roots_of(listed, seen)
        if new:
            quiet_since = now
        state = {"seen": sorted(seen | {s.shard_id for s in listed}), "quiet_since_ms": quiet_since}
        idle_stop_s = self._shards.idle_stop_s
        if idle_stop_s is not None and not new and now - quiet_since >= idle_stop_s * 1000:
            tracker.try_claim(None)  # nothing new for long enough: discovery ends (replays, tests)
            return
        if not tracker.try_claim(state):
            return
        # A root not listed at the previous discovery has no data older than it: emit it at the
        # current watermark (that discovery's time, or -inf at the first), then move to now.
        stamp = watermark.current_watermark() or MIN_TIMESTAMP
        for root in new:
            yield window.TimestampedValue((root, not first), stamp)
        _advance(watermark, now)
        tracker.defer_remainder(Duration.of(self._shards.discovery_interval_s))

    def teardown(self) -> None:
        self._shards.close()


class _ReadShardFn(beam.DoFn):
    """Reads one root (and its descendants) per ``(root, added)`` element; the restriction is its
    poller's checkpoint.

    One DoFn instance may hold several roots' restrictions in turn: open pollers are kept per root
    and reused when they stand exactly at the restriction's checkpoint."""

    def __init__(self, shards: ShardedPollers, pacing: ReadPacing, trace: str | None = None) -> None:
        self._shards = shards
        self._pacing = pacing
        self._trace = trace
        self._pollers: dict[str, Poller] = {}
        self.stop_token: str | None = None  # set by stop_reads_on

    def setup(self) -> None:
        self._pollers = {}

    def _poller_at(self, root: str, added: bool, state: dict) -> Poller:
        poller = self._pollers.pop(root, None)
        if poller is not None and poller.checkpoint() == state:
            self._pollers[root] = poller
            return poller
        if poller is not None:
            poller.close()
        poller = self._shards.poller_for([root], added=added)
        if state:
            poller.restore(state)
        poller.open()
        self._pollers[root] = poller
        return poller

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: tuple[str, bool],
        tracker=beam.DoFn.RestrictionParam(_PollRestrictions()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ) -> Iterator:
        position: PollerPosition = tracker.current_restriction()
        if position.done:
            return
        root, added = element
        started = time.time()
        rows = 0
        poller = self._poller_at(root, added, position.state)
        rounds = _poll_rounds(
            poller,
            tracker,
            watermark,
            self._pacing,
            self.stop_token,
        )
        try:
            while True:
                try:
                    value = next(rounds)
                except StopIteration as end:
                    ended = end.value
                    break
                rows += _rows(value.value)
                yield value
            if ended in ("stopped", "done"):
                self._pollers.pop(root, None)
                poller.close()  # checkpoints the source where it stands
            elif ended == "more":
                tracker.defer_remainder(Duration.of(self._pacing.poll_interval_s))
        finally:
            if self._trace and rows:
                self._write_trace(root, rows, started)

    def _write_trace(self, root: str, rows: int, started: float) -> None:
        line = {
            "pid": os.getpid(),
            "thread": threading.current_thread().name,
            "reader": f"{os.getpid()}:{id(self):x}",
            "root": root,
            "rows": rows,
            "start": started,
            "end": time.time(),
        }
        with open(self._trace, "a", encoding="utf-8") as handle:  # one short line: an atomic append
            handle.write(json.dumps(line) + "\n")

    def teardown(self) -> None:
        for poller in self._pollers.values():
            poller.close()
        self._pollers = {}


def _rows(element) -> int:
    """Records in one emitted element: an Arrow batch's rows, a RawBatch's lines."""
    if hasattr(element, "num_rows"):
        return element.num_rows
    positions = getattr(element, "positions", None)
    if positions is not None:
        return len(positions)
    return bytes(getattr(element, "data", b"")).count(b"\n")


READ_FROM_POLLER_URN = "beam:transform:rtbf:read_from_poller:v1"


class ReadFromPoller(beam.PTransform):
    """An unbounded (or self-ending) read driven by ``make_poller()``.

    It carries a URN (payload: the pickled transform) so it survives Beam's
    runner-API round trip and the local streaming runner can still find it.
    """

    def __init__(
        self,
        make_poller: Callable[[], Poller],
        pacing: ReadPacing = ReadPacing(),
        shards: ShardedPollers | None = None,
        read_trace: str | None = None,
    ) -> None:
        super().__init__()
        self.pacing = pacing
        self.read_trace = read_trace  # diagnostics (--read_trace): a JSON line per shard-reader call
        self.make_poller = make_poller  # the whole stream: the local streaming runner's form
        self.shards = shards  # units of work: a restriction per root on portable runners

    def to_runner_api_parameter(self, unused_context):
        return READ_FROM_POLLER_URN, pickler.dumps(self)

    @staticmethod
    @beam.PTransform.register_urn(READ_FROM_POLLER_URN, None)
    def from_runner_api_parameter(unused_ptransform, payload, unused_context):
        return pickler.loads(payload)

    def expand(self, pbegin):
        if self.shards is None:
            return pbegin | "Start" >> beam.Impulse() | "Poll" >> beam.ParDo(_PollFn(self.make_poller, self.pacing))
        return (
            pbegin
            | "Start" >> beam.Impulse()
            | "Discover" >> beam.ParDo(_DiscoverFn(self.shards))
            | "Spread" >> beam.Reshuffle()
            | "ReadShard" >> beam.ParDo(_ReadShardFn(self.shards, self.pacing, self.read_trace))
        )
