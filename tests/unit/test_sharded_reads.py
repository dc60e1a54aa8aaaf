"""Sharded reads: discovery emits each root once, a restriction per root, children follow their
parent's reader (Kinesis lineage), and the local streaming runner still reads the whole stream."""

from __future__ import annotations

import time

import apache_beam as beam
import pytest
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from beam_rtbf.local_runner import LocalStreamingRunner
from beam_rtbf.sources import source_for
from beam_rtbf.sources.kinesis import KinesisPoller
from beam_rtbf.sources.poller import Poller, PollResult, ShardedPollers, ShardInfo, owner, roots_of
from beam_rtbf.sources.polling import (
    PollerPosition,
    PositionTracker,
    ReadFromPoller,
    ReadPacing,
    _DiscoverFn,
    _ReadShardFn,
)

T0_MS = 1_767_225_600_000
RECORDS = {"a": [f"a{i}" for i in range(7)], "b": [f"b{i}" for i in range(4)], "c": [f"c{i}" for i in range(5)]}
OPENED: list[str] = []  # module level: pollers are pickled by reference


class ListPoller(Poller):
    """Reads RECORDS[root] two per poll; its checkpoint is the next index; ends when read."""

    def __init__(self, root: str | None = None) -> None:
        self.roots = [root] if root else sorted(RECORDS)
        self.next = {r: 0 for r in self.roots}

    def open(self) -> None:
        OPENED.append(",".join(self.roots))

    def poll(self) -> PollResult:
        out = []
        for root in self.roots:
            at = self.next[root]
            out += [(r, T0_MS + i) for i, r in enumerate(RECORDS[root][at : at + 2], start=at)]
            self.next[root] = min(at + 2, len(RECORDS[root]))
        done = not out and all(self.next[r] == len(RECORDS[r]) for r in self.roots)
        return PollResult(out, T0_MS + min(self.next.values()), done=done)

    def checkpoint(self) -> dict:
        return dict(self.next)

    def restore(self, state: dict) -> None:
        self.next.update(state)


class ScriptedShards(ShardedPollers):
    """``discover`` returns the next listing of a script (the last one repeats)."""

    discovery_interval_s = 0.0

    def __init__(self, listings: list[list[ShardInfo]], idle_stop_s: float | None = None) -> None:
        self.listings = listings
        self.calls = 0
        self.idle_stop_s = idle_stop_s

    def discover(self) -> list[ShardInfo]:
        listing = self.listings[min(self.calls, len(self.listings) - 1)]
        self.calls += 1
        return listing

    def poller_for(self, roots: list[str], added: bool = False) -> Poller:
        (root,) = roots
        return ListPoller(root)


def _call(fn, element, position: PollerPosition, watermark_state):
    """One process call as the SDK harness makes it: (outputs, residual or None, watermark)."""
    tracker = ThreadsafeRestrictionTracker(PositionTracker(position))
    estimator = ManualWatermarkEstimator(watermark_state)
    outputs = list(fn.process(element, tracker=RestrictionTrackerView(tracker), watermark=estimator))
    deferred = tracker.deferred_status()
    if deferred is None:
        tracker.check_done()
    residual = deferred[0] if deferred else None  # the deferred residual restriction
    return outputs, residual, estimator.current_watermark()


def test_roots_are_units_without_a_known_parent_and_children_belong_to_their_first_known_parent():
    listed = [ShardInfo("0"), ShardInfo("1"), ShardInfo("2", ("0",)), ShardInfo("4", ("2", "1"))]
    assert roots_of(listed) == ["0", "1"]
    assert roots_of([ShardInfo("9", ("expired",))]) == ["9"]  # its parent left retention before the start
    assert roots_of([ShardInfo("2", ("0",))], seen={"0", "2"}) == []  # seen before: its reader has it
    assert roots_of([ShardInfo("5", ("0",))], seen={"0"}) == []  # a new child of a known (now expired) parent
    known = {s.shard_id for s in listed}
    assert owner(listed[3], known) == "2"  # a merge child: the ParentShardId's reader
    assert owner(ShardInfo("4", ("gone", "1")), known) == "1"
    assert owner(listed[0], known) is None


def test_discovery_emits_each_root_once_across_polls_including_added_ones_then_ends_when_quiet():
    a, b = ShardInfo("a"), ShardInfo("b")
    shards = ScriptedShards(
        [
            [a, b],
            [a, b],
            [a, b, ShardInfo("c")],  # a partition added while running
            [a, b, ShardInfo("c"), ShardInfo("d", ("b",)), ShardInfo("e", ("b",))],  # a split: children of b
            [a, ShardInfo("c"), ShardInfo("d", ("b",)), ShardInfo("e", ("b",))],  # b expired out of retention
        ],
        idle_stop_s=0.3,
    )
    fn = _DiscoverFn(shards)
    position, wm, emitted, stamps, marks = PollerPosition({}), None, [], [], []
    deadline = time.monotonic() + 10
    while position is not None and time.monotonic() < deadline:
        before = wm
        outputs, position, wm = _call(fn, None, position, wm)
        emitted += [o.value for o in outputs]
        stamps += [(o.timestamp, before) for o in outputs]
        marks.append(wm)
    assert position is None, "discovery did not end once quiet"
    assert emitted == [("a", False), ("b", False), ("c", True)]  # each root once; children never
    assert stamps[0][0] == stamps[1][0] == MIN_TIMESTAMP  # the first listing: at -inf
    assert stamps[2][0] == stamps[2][1] and stamps[2][0] > MIN_TIMESTAMP  # later: the previous discovery's time
    assert all(x <= y for x, y in zip(marks, marks[1:]))
    assert marks[-1] >= Timestamp.of(time.time() - 5)  # the step's watermark follows the clock


def test_a_restriction_per_root_resumes_exactly_on_another_worker():
    """Each root's residual holds its own checkpoint; a fresh DoFn (another worker) continues it."""
    OPENED.clear()
    shards = ScriptedShards([[ShardInfo(r) for r in RECORDS]])
    first = _ReadShardFn(shards, ReadPacing(poll_interval_s=0.0, polls_per_call=1, call_s=0.0))
    first.setup()
    residuals, read = {}, []
    for root in RECORDS:  # one DoFn instance, three roots in turn
        outputs, residuals[root], _ = _call(first, (root, False), PollerPosition({}), None)
        read += [o.value for o in outputs]
    assert residuals["a"] == PollerPosition({"a": 2}) and residuals["c"] == PollerPosition({"c": 2})
    second = _ReadShardFn(shards, ReadPacing(poll_interval_s=0.0, polls_per_call=3, call_s=0.0))
    second.setup()
    for root, position in residuals.items():
        while position is not None:
            outputs, position, _ = _call(second, (root, False), position, None)
            read += [o.value for o in outputs]
    assert sorted(read) == sorted(r for records in RECORDS.values() for r in records)
    assert len(read) == sum(len(r) for r in RECORDS.values())
    for root, records in RECORDS.items():
        assert [r for r in read if r[0] == root] == records  # in order within a root
    assert OPENED == ["a", "b", "c", "a", "b", "c"]  # a poller per root, per worker


def test_the_reader_keeps_its_poller_while_it_stands_at_the_restriction():
    OPENED.clear()
    fn = _ReadShardFn(ScriptedShards([[ShardInfo("a")]]), ReadPacing(poll_interval_s=0.0, polls_per_call=1, call_s=0.0))
    fn.setup()
    position, wm, seen = PollerPosition({}), None, []
    while position is not None:
        outputs, position, wm = _call(fn, ("a", False), position, wm)
        seen += [o.value for o in outputs]
    assert seen == RECORDS["a"] and OPENED == ["a"]
    assert wm == Timestamp(micros=(T0_MS + 7) * 1000)  # the last the poller reported


class FakeKinesis:
    """ListShards from a script the test advances."""

    def __init__(self) -> None:
        self.shards: list[dict] = []

    def add(self, shard_id: str, parent: str | None = None, adjacent: str | None = None) -> None:
        shard = {"ShardId": shard_id, "SequenceNumberRange": {"StartingSequenceNumber": "0"}}
        shard.update({k: v for k, v in (("ParentShardId", parent), ("AdjacentParentShardId", adjacent)) if v})
        self.shards.append(shard)

    def close(self, *shard_ids: str) -> None:
        for shard in self.shards:
            if shard["ShardId"] in shard_ids:
                shard["SequenceNumberRange"]["EndingSequenceNumber"] = "9"

    def list_shards(self, **_):
        return {"Shards": [dict(s) for s in self.shards]}


def _restricted(client: FakeKinesis, roots: list[str]) -> KinesisPoller:
    poller = KinesisPoller("s", roots=roots)
    poller._client = client
    poller._discover()
    return poller


def test_kinesis_children_follow_the_reader_of_their_first_parent_and_wait_for_its_end():
    client = FakeKinesis()
    for shard in ("0", "1", "2"):
        client.add(shard)
    readers = {root: _restricted(client, [root]) for root in ("0", "1", "2")}
    client.close("0")
    client.add("3", "0")
    client.add("4", "0")  # 0 split into 3 and 4
    client.close("3", "1")
    client.add("5", "3", "1")  # 3 and 1 merged into 5: read by 3's reader (0's lineage)
    for reader in readers.values():
        reader._discover()
    assert {root: sorted(r._shards) for root, r in readers.items()} == {
        "0": ["0", "3", "4", "5"],
        "1": ["1"],
        "2": ["2"],
    }  # every shard read by exactly one reader
    zero = readers["0"]
    readable = lambda: sorted(s.shard_id for s in zero._shards.values() if zero._readable(s))  # noqa: E731
    assert readable() == ["0"]  # the children wait for their parent's end
    zero._shards["0"].finished = True
    assert readable() == ["3", "4"]
    zero._shards["3"].finished = True
    assert readable() == ["4", "5"]
    assert _restricted(client, ["1"])._shards.keys() == {"1"}  # a restart of 1's reader: still only 1


def test_the_local_streaming_runner_reads_a_sharded_source_as_one_whole_stream_poller():
    OPENED.clear()
    seen = beam.metrics.Metrics.counter("test", "seen")

    def count(element):
        seen.inc()
        return element

    shards = ScriptedShards([[ShardInfo(r) for r in RECORDS]], idle_stop_s=0.0)
    pipeline = beam.Pipeline(runner=LocalStreamingRunner(), options=PipelineOptions(["--streaming"]))
    _ = pipeline | ReadFromPoller(ListPoller, ReadPacing(poll_interval_s=0.01), shards=shards) | beam.Map(count)
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query()["counters"]
    assert sum(c.committed for c in counters if c.key.metric.name == "seen") == 16
    assert OPENED == ["a,b,c"]  # make_poller: one poller over every root


@pytest.mark.slow
def test_sharded_read_on_the_fn_api_runner_reads_every_root_once():
    OPENED.clear()
    shards = ScriptedShards([[ShardInfo(r) for r in RECORDS]], idle_stop_s=0.0)
    with beam.Pipeline(runner=FnApiRunner()) as p:
        got = p | ReadFromPoller(ListPoller, ReadPacing(poll_interval_s=0.0, polls_per_call=2), shards=shards)
        assert_that(got, equal_to([r for v in RECORDS.values() for r in v]))
    assert sorted(OPENED) == ["a", "b", "c"]


def test_synthetic_sessions_are_sharded_only_when_shards_is_given():
    assert source_for("synthetic://sessions?rate=100", "sessions").shards() is None
    assert source_for("synthetic://sessions?sessions=10&shards=2", "sessions").shards() is None  # bounded
    assert source_for("synthetic://requests?request_rate=1&shards=2", "requests").shards() is None
    shards = source_for("synthetic://sessions?rate=400&shards=4&seed=3", "sessions").shards()
    assert [s.shard_id for s in shards.discover()] == ["0", "1", "2", "3"]
    ids = set()
    for root in "0123":
        poller = shards.poller_for([root])
        poller.open()
        poller._last -= 1.0  # one second of generation: rate/4 sessions each
        ((batch, _),) = poller.poll().elements
        assert batch.num_rows == 100
        ids |= set(batch.column("event_id").to_pylist())
    assert len(ids) == 400  # distinct ids across shards


class IdlePoller(ListPoller):
    """Never has anything (a quiet stream): counts its polls."""

    polls = 0

    def poll(self) -> PollResult:
        IdlePoller.polls += 1
        return PollResult([], T0_MS, done=False)


def test_an_idle_read_defers_once_per_call_time_not_after_every_empty_poll():
    """Each deferral is a residual Beam's Flink runner keeps in its checkpoint for good
    (apache/beam#27648): with ``call_s`` a quiet read polls on for that long, pausing between polls."""
    shards = ScriptedShards([[ShardInfo("a")]])
    shards.poller_for = lambda roots, added=False: IdlePoller("a")
    IdlePoller.polls = 0
    quick = _ReadShardFn(shards, ReadPacing(poll_interval_s=0.05, polls_per_call=100, call_s=0.0))
    quick.setup()
    _, residual, _ = _call(quick, ("a", False), PollerPosition({}), None)
    assert residual is not None and IdlePoller.polls == 1  # call_s=0: deferred after the first empty poll
    IdlePoller.polls = 0
    patient = _ReadShardFn(shards, ReadPacing(poll_interval_s=0.05, polls_per_call=100, call_s=0.4))
    patient.setup()
    started = time.monotonic()
    _, residual, _ = _call(patient, ("a", False), PollerPosition({}), None)
    assert residual is not None and time.monotonic() - started >= 0.4
    assert 4 <= IdlePoller.polls <= 10  # about one poll per pause, one residual for the call


class TrickleThenIdlePoller(ListPoller):
    """One record at its first poll, nothing after (a request on a quiet stream): counts its polls."""

    polls = 0

    def poll(self) -> PollResult:
        TrickleThenIdlePoller.polls += 1
        out = [("request-1", T0_MS)] if TrickleThenIdlePoller.polls == 1 else []
        return PollResult(out, T0_MS, done=False)


def test_a_read_that_ends_its_call_on_data_defers_right_after_a_poll_that_read_something():
    """On Flink a call's outputs leave its stage when the call ends: with ``end_call_on_data`` (the
    requests read) a record does not wait out ``call_s``; idle, the call still lasts ``call_s``."""
    shards = ScriptedShards([[ShardInfo("a")]])
    shards.poller_for = lambda roots, added=False: TrickleThenIdlePoller("a")
    eager = _ReadShardFn(
        shards, ReadPacing(poll_interval_s=0.05, polls_per_call=100, call_s=0.4, end_call_on_data=True)
    )
    eager.setup()
    TrickleThenIdlePoller.polls = 0
    started = time.monotonic()
    outputs, residual, _ = _call(eager, ("a", False), PollerPosition({}), None)
    assert [o.value for o in outputs] == ["request-1"] and residual is not None
    assert TrickleThenIdlePoller.polls == 1 and time.monotonic() - started < 0.2
    started = time.monotonic()
    outputs, residual, _ = _call(eager, ("a", False), residual, None)  # idle now: the whole call_s
    assert outputs == [] and residual is not None and time.monotonic() - started >= 0.4
    patient = _ReadShardFn(shards, ReadPacing(poll_interval_s=0.05, polls_per_call=100, call_s=0.4))
    patient.setup()
    TrickleThenIdlePoller.polls = 0
    started = time.monotonic()
    outputs, residual, _ = _call(patient, ("a", False), PollerPosition({}), None)
    assert [o.value for o in outputs] == ["request-1"] and time.monotonic() - started >= 0.4
    assert TrickleThenIdlePoller.polls >= 4


class FlowingPoller(ListPoller):
    """Always has one more record (a busy stream): counts its polls."""

    polls = 0

    def poll(self) -> PollResult:
        FlowingPoller.polls += 1
        return PollResult([(f"r{FlowingPoller.polls}", T0_MS)], T0_MS, done=False)

    def checkpoint(self) -> dict:
        return {"polls": FlowingPoller.polls}


def test_a_read_that_gathers_pauses_after_each_poll_with_data_and_ends_at_its_call_time():
    """With ``gather_s`` a busy read polls about once per ``gather_s`` (fewer, bigger batches) and
    its call ends at ``call_s``; back to back it makes ``polls_per_call`` polls, however long."""
    shards = ScriptedShards([[ShardInfo("a")]])
    shards.poller_for = lambda roots, added=False: FlowingPoller("a")
    gathering = _ReadShardFn(shards, ReadPacing(poll_interval_s=0.05, polls_per_call=100, call_s=0.45, gather_s=0.1))
    gathering.setup()
    FlowingPoller.polls = 0
    started = time.monotonic()
    outputs, residual, _ = _call(gathering, ("a", False), PollerPosition({}), None)
    took = time.monotonic() - started
    assert residual is not None and 0.45 <= took < 0.7, took
    assert len(outputs) == FlowingPoller.polls and 4 <= FlowingPoller.polls <= 6  # one per 0.1 s, not 100
    eager = _ReadShardFn(shards, ReadPacing(poll_interval_s=0.05, polls_per_call=100, call_s=0.0))
    eager.setup()
    FlowingPoller.polls = 0
    outputs, residual, _ = _call(eager, ("a", False), PollerPosition({}), None)
    assert residual is not None and len(outputs) == FlowingPoller.polls == 100
