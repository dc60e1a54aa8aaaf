"""The local streaming runner changes nothing in Beam for anyone else, and the Beam internals
it builds on still have the shape it was written against (the pinned apache-beam)."""

from __future__ import annotations

import gc
import hashlib
import inspect

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct import direct_runner, direct_userstate, executor, transform_evaluator
from apache_beam.runners.direct.evaluation_context import EvaluationContext
from apache_beam.runners.direct.watermark_manager import WatermarkManager
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from beam_rtbf.local_runner import LocalStreamingRunner
from beam_rtbf.sources.base import Poller, PollResult
from beam_rtbf.sources.polling import ReadFromPoller, ReadPacing

T0_MS = 1_767_225_600_000
CHUNKS = [[f"a{i}" for i in range(5)], [], [f"b{i}" for i in range(7)], [f"c{i}" for i in range(3)]]
EVENTS: list[str] = []  # what the pollers did, in order (module level: the poller is pickled by reference)

# sha256 of the Beam methods local_runner re-states, as in apache-beam 2.77.0. A change
# means Beam moved: re-sync LocalStreamingRunner.run_pipeline,
# _PerBundleMetricsParallelExecutor.schedule_consumption, _ParDoOnceEvaluator.start_bundle and
# _StreamingEvaluatorRegistry.should_execute_serially and _InProcessStateContext.get_state with the
# new source (and check _InProcessValueState still stands for the value state), then update.
PINNED_SOURCES = {
    "BundleBasedDirectRunner.run_pipeline": "1948c09b5b5903b94f580266f28fb22d26036ce88e8a6fe4046571c7f74bfd35",
    "_ExecutorServiceParallelExecutor.schedule_consumption": (
        "4ce07e42bfe6b9e6701ac3571afdcb4e1c5ccd2c0640ec541041bf22d35f8377"
    ),
    "_ParDoEvaluator.start_bundle": "23c7e2f6f26f091dd2c51711a19deebae07f76c9032a110fce51ca552b3fd13e",
    "TransformEvaluatorRegistry.should_execute_serially": (
        "30fcdba9c0dfdd7e723cdba351e8da5a2993a4dce1c63101f691000c9ca96d62"
    ),
    "DirectUserStateContext.get_state": "f90a4605ac214f50b8d0728a9ea546c257d615b27536aade052b4bd7ffb384e4",
    "DirectUserStateContext.commit": "afb3fd9fc02bfc056bed924393ad32618e90fc89ec2094660132614943481d84",
    "ReadModifyWriteRuntimeState.read": "b97030e6caa3fdae5877dfb5bbed791cbe3bb028311e832507826a9f478b3ea1",
    "ReadModifyWriteRuntimeState.write": "1e498149a4f194a4ecaf5801f885dbf5e1465a3a2cd06a7d9e5de5558d57cd75",
}


class ChunkPoller(Poller):
    """Emits ``CHUNKS`` one per poll (an empty one in between), then ends."""

    def __init__(self) -> None:
        self._next = 0

    def open(self) -> None:
        EVENTS.append("open")

    def poll(self) -> PollResult:
        if self._next >= len(CHUNKS):
            return PollResult([], None, done=True)
        chunk = CHUNKS[self._next]
        self._next += 1
        stamp = T0_MS + 1000 * self._next
        return PollResult([(element, stamp) for element in chunk], stamp)

    def close(self) -> None:
        EVENTS.append("close")


class CountSeen(beam.DoFn):
    def __init__(self) -> None:
        self.seen = beam.metrics.Metrics.counter("test", "seen")

    def process(self, element):
        self.seen.inc()
        yield element


def _run_counting_pipeline() -> int:
    """Reads every chunk on a LocalStreamingRunner and returns the committed ``seen`` counter."""
    pipeline = beam.Pipeline(runner=LocalStreamingRunner(), options=PipelineOptions(["--streaming"]))
    _ = (
        pipeline
        | "Read" >> ReadFromPoller(ChunkPoller, ReadPacing(poll_interval_s=0.01))
        | "Count" >> beam.ParDo(CountSeen())
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("seen"))["counters"]
    return sum(counter.committed for counter in counters)


def _params(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_a_run_leaves_beams_classes_as_they_were():
    call = executor.TransformExecutor.call
    schedule = executor._ExecutorServiceParallelExecutor.schedule_consumption
    get_evaluator = transform_evaluator.TransformEvaluatorRegistry.get_evaluator
    overrides = transform_evaluator.TransformEvaluatorRegistry._test_evaluators_overrides
    overrides_before = dict(overrides)

    assert _run_counting_pipeline() == 15

    assert executor.TransformExecutor.call is call
    assert not hasattr(executor.TransformExecutor.call, "_rtbf_patched")
    assert executor._ExecutorServiceParallelExecutor.schedule_consumption is schedule
    assert transform_evaluator.TransformEvaluatorRegistry.get_evaluator is get_evaluator
    assert transform_evaluator.TransformEvaluatorRegistry._test_evaluators_overrides is overrides
    assert overrides == overrides_before == {}


def test_user_counters_count_every_bundle_and_each_run_has_its_own_pollers():
    EVENTS.clear()
    assert _run_counting_pipeline() == 15  # 5 + 7 + 3 elements over four polls: no bundle's counts lost
    assert EVENTS == ["open", "close"]
    assert _run_counting_pipeline() == 15  # a second run opens its own poller and reads everything again
    assert EVENTS == ["open", "close", "open", "close"]
    gc.collect()  # the runs' transforms are gone: a poller that ended is not closed a second time
    assert EVENTS == ["open", "close", "open", "close"]


def test_the_beam_internals_the_runner_builds_on_keep_their_shape():
    assert beam.__version__.startswith("2.77."), "local_runner re-states Beam 2.77 internals; see setup.py"
    sources = {
        "BundleBasedDirectRunner.run_pipeline": direct_runner.BundleBasedDirectRunner.run_pipeline,
        "_ExecutorServiceParallelExecutor.schedule_consumption": (
            executor._ExecutorServiceParallelExecutor.schedule_consumption
        ),
        "_ParDoEvaluator.start_bundle": transform_evaluator._ParDoEvaluator.start_bundle,
        "TransformEvaluatorRegistry.should_execute_serially": (
            transform_evaluator.TransformEvaluatorRegistry.should_execute_serially
        ),
        "DirectUserStateContext.get_state": direct_userstate.DirectUserStateContext.get_state,
        "DirectUserStateContext.commit": direct_userstate.DirectUserStateContext.commit,
        "ReadModifyWriteRuntimeState.read": direct_userstate.ReadModifyWriteRuntimeState.read,
        "ReadModifyWriteRuntimeState.write": direct_userstate.ReadModifyWriteRuntimeState.write,
    }
    digests = {name: hashlib.sha256(inspect.getsource(fn).encode()).hexdigest() for name, fn in sources.items()}
    assert digests == PINNED_SOURCES

    assert _params(executor.TransformExecutor.__init__) == [
        "self",
        "transform_evaluator_registry",
        "evaluation_context",
        "input_bundle",
        "fired_timers",
        "applied_ptransform",
        "completion_callback",
        "transform_evaluation_state",
    ]
    assert _params(executor.TransformExecutor.call) == ["self", "state_sampler"]
    assert _params(executor._ExecutorServiceParallelExecutor.__init__) == [
        "self",
        "value_to_consumers",
        "transform_evaluator_registry",
        "evaluation_context",
    ]
    assert _params(executor._ExecutorServiceParallelExecutor.schedule_consumption) == [
        "self",
        "consumer_applied_ptransform",
        "committed_bundle",
        "fired_timers",
        "on_complete",
    ]
    for method in ("start", "await_completion", "shutdown"):  # the facade delegates to self._executor
        assert "self._executor." in inspect.getsource(getattr(executor.Executor, method))
    registry = transform_evaluator.TransformEvaluatorRegistry
    assert _params(registry.__init__) == ["self", "evaluation_context"]
    assert _params(registry.get_evaluator) == ["self", "applied_ptransform", "input_committed_bundle", "side_inputs"]
    assert "self._evaluation_context = evaluation_context" in inspect.getsource(registry.__init__)
    assert _params(transform_evaluator._TransformEvaluator.__init__) == [
        "self",
        "evaluation_context",
        "applied_ptransform",
        "input_committed_bundle",
        "side_inputs",
    ]
    assert _params(transform_evaluator.TransformResult.__init__) == [
        "self",
        "transform_evaluator",
        "uncommitted_output_bundles",
        "unprocessed_bundles",
        "counters",
        "keyed_watermark_holds",
        "undeclared_tag_values",
    ]
    assert _params(EvaluationContext.__init__) == [
        "self",
        "pipeline_options",
        "bundle_factory",
        "root_transforms",
        "value_to_consumers",
        "step_names",
        "views",
        "clock",
    ]
    assert _params(direct_runner.DirectPipelineResult.__init__) == ["self", "executor", "evaluation_context"]
    assert _params(direct_runner._get_transform_overrides) == ["pipeline_options"]
    assert WatermarkManager.WATERMARK_POS_INF > WatermarkManager.WATERMARK_NEG_INF


class _Stateful(beam.DoFn):
    from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer

    BAG = BagStateSpec("bag", beam.coders.StrUtf8Coder())
    FLUSH = TimerSpec("flush", beam.transforms.timeutil.TimeDomain.WATERMARK)

    def process(self, element, bag=beam.DoFn.StateParam(BAG), flush=beam.DoFn.TimerParam(FLUSH)):
        bag.add(element[1])
        flush.set(0)

    @on_timer(FLUSH)
    def on_flush(self, bag=beam.DoFn.StateParam(BAG)):
        yield from bag.read()


def test_the_registry_answers_as_beams_for_every_step_asking_each_dofn_once(monkeypatch):
    """The cached DoFn facts (stateful or not, timer specs) equal Beam's own answers, step by step."""
    from apache_beam.transforms import userstate

    from beam_rtbf.local_runner import _RunPollers, _StreamingEvaluatorRegistry

    p = beam.Pipeline()
    keyed = p | beam.Create([("k", "a"), ("k", "b")]) | "Plain" >> beam.Map(lambda kv: kv)
    keyed | "Stateful" >> beam.ParDo(_Stateful())
    keyed | beam.GroupByKey()
    steps = []

    class Collect(beam.pipeline.PipelineVisitor):
        def visit_transform(self, applied):
            steps.append(applied)

    p.visit(Collect())
    context = object()  # the answers never read the evaluation context
    beams = transform_evaluator.TransformEvaluatorRegistry(context)
    ours = _StreamingEvaluatorRegistry(context, _RunPollers())
    expected = {s.full_label: beams.should_execute_serially(s) for s in steps}
    assert expected["Stateful"] is True and expected["Plain"] is False
    assert sum(expected.values()) == 1  # before the direct runner's overrides a GroupByKey is not yet its serial steps
    asked = []
    real = userstate.is_stateful_dofn
    monkeypatch.setattr(userstate, "is_stateful_dofn", lambda dofn: asked.append(dofn) or real(dofn))
    for _ in range(3):  # every bundle asks again
        assert {s.full_label: ours.should_execute_serially(s) for s in steps} == expected
    par_dos = [s for s in steps if isinstance(s.transform, beam.ParDo)]
    assert len(asked) == len(par_dos) >= 2  # once per ParDo step, not once per bundle
    stateful = next(s for s in steps if s.full_label == "Stateful")
    assert ours._facts.of(stateful)[1] == tuple(userstate.get_dofn_specs(stateful.transform.dofn)[1])


CODER_CALLS: list[str] = []  # what the value state's coder was asked, in order
RUNNING: list[tuple] = []  # what _RunningList emitted (module level: the DoFns are pickled by reference)


class _CountingCoder(PickleCoder):
    def encode(self, value):
        CODER_CALLS.append("encode")
        return super().encode(value)

    def decode(self, encoded):
        CODER_CALLS.append("decode")
        return super().decode(encoded)


class _RunningList(beam.DoFn):
    """Keeps every value seen per key in a value state (mutated in place, as the dedupe memory is)."""

    SEEN = ReadModifyWriteStateSpec("seen", _CountingCoder())

    def process(self, element, seen_state=beam.DoFn.StateParam(SEEN)):
        key, value = element
        seen = seen_state.read() or []
        seen.append(value)
        seen_state.write(seen)
        yield key, tuple(sorted(seen))


def _keep(element) -> None:
    RUNNING.append(element)


def _running_lists(runner) -> list:
    RUNNING.clear()
    with beam.Pipeline(runner=runner, options=PipelineOptions(["--streaming"] if runner else [])) as p:
        _ = (
            p
            | beam.Create([("a", 1), ("b", 10), ("a", 2), ("a", 3), ("b", 20)])
            | beam.ParDo(_RunningList())
            | beam.Map(_keep)
        )
    return sorted(RUNNING)


def test_value_state_is_kept_unencoded_by_the_local_runner_with_the_same_answers():
    """Beam's direct runner encodes a value state on every write and decodes it on every read (a
    large dedupe memory paid its size per batch); the local streaming runner keeps the object."""
    CODER_CALLS.clear()
    local = _running_lists(LocalStreamingRunner())
    assert CODER_CALLS == []
    assert local == [("a", (1,)), ("a", (1, 2)), ("a", (1, 2, 3)), ("b", (10,)), ("b", (10, 20))]
    beams = _running_lists(direct_runner.BundleBasedDirectRunner())
    assert beams == local and CODER_CALLS.count("encode") == 5  # Beam's own runner: one per write
