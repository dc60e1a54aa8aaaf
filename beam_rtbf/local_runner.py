"""A local runner that truly streams: the BundleBasedDirectRunner plus polling sources.

Beam 2.77's local runners split the work: the FnApiRunner runs splittable
DoFns but emits windows only when the source ends; the BundleBasedDirectRunner
streams (watermarks, triggers, state, timers) but cannot expand splittable
DoFns. This runner replaces each ``ReadFromPoller`` with a root transform the
BundleBasedDirectRunner evaluates the way it evaluates its own Pub/Sub read:
every evaluation polls once, emits what arrived, holds the output watermark at
the poller's watermark and schedules itself again, until the poller is done.
Everything downstream (windows, GroupByKey, keyed state) then runs while the
stream is still flowing.

Stopping: ``LocalStreamingRunner(stop=StopRequest())`` ends the reads when the
request is set (``beam-rtbf run`` sets it on the first SIGINT/SIGTERM). Each
polling read then closes its poller (which checkpoints the source), emits
nothing more and moves its watermark to +inf, so every window closes, keyed
state flushes and the pipeline finishes as if the streams had ended: the
outputs are complete for what was read and the summary is written.

Isolation: the runner changes nothing in Beam for anyone else. It uses its own
subclasses of Beam's executor (a state sampler per bundle, so user counters
count every bundle) and evaluator registry (the polling read), and keeps the
open pollers per run. Those subclasses lean on Beam internals of the pinned
version (see setup.py); tests/unit/test_local_runner_isolation.py checks their
shape and that a run leaves Beam's classes as they were.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from apache_beam import coders, pvalue
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.options.value_provider import RuntimeValueProvider
from apache_beam.pipeline import PipelineVisitor, PTransformOverride
from apache_beam.runners.common import DoFnRunner, DoFnState
from apache_beam.runners.direct.bundle_factory import BundleFactory
from apache_beam.runners.direct.clock import RealClock, TestClock
from apache_beam.runners.direct.consumer_tracking_pipeline_visitor import ConsumerTrackingPipelineVisitor
from apache_beam.runners.direct.direct_runner import (
    BundleBasedDirectRunner,
    DirectPipelineResult,
    _get_transform_overrides,
)
from apache_beam.runners.direct.direct_userstate import DirectUserStateContext, ReadModifyWriteRuntimeState
from apache_beam.runners.direct.evaluation_context import EvaluationContext
from apache_beam.runners.direct.executor import (
    Executor,
    TransformExecutor,
    _ExecutorServiceParallelExecutor,
)
from apache_beam.runners.direct.transform_evaluator import (
    TransformEvaluatorRegistry,
    TransformResult,
    _ParDoEvaluator,
    _TaggedReceivers,
    _TransformEvaluator,
)
from apache_beam.runners.direct.watermark_manager import WatermarkManager
from apache_beam.runners.worker import statesampler
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms import PTransform, core, userstate
from apache_beam.transforms.external import ExternalTransform
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils import counters
from apache_beam.utils.timestamp import Timestamp

from beam_rtbf.sources.base import Poller, PollResult
from beam_rtbf.sources.polling import ReadFromPoller

__all__ = ["LocalStreamingRunner", "StopRequest"]


class StopRequest:
    """A request to end a local streaming run cleanly: the reads stop and the pipeline drains.

    One object per run, handed to the runner (not module state): whoever holds it (the
    CLI's signal handler, a test) calls ``stop(reason)``; the polling reads see it.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None
        self.armed = False  # set by the runner that honours it; else a signal keeps its default action
        self.action = "stopping the reads and draining"  # what honouring it does, as the signal handler says

    def stop(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()


class _DirectPollingRead(PTransform):
    """Root primitive standing in for ``ReadFromPoller`` on the local streaming runner."""

    def __init__(self, read: ReadFromPoller, stop: StopRequest | None = None) -> None:
        super().__init__()
        self.read = read
        self.stop = stop

    def expand(self, pbegin):
        return pvalue.PCollection(self.pipeline, is_bounded=False)


class _PollerState:
    """The open poller of one applied transform, shared by its successive evaluations."""

    def __init__(self, poller: Poller) -> None:
        self.poller = poller
        self.lock = threading.Lock()
        self.done = False
        self._closed = False

    def close(self) -> None:
        """Close the poller once: at the end of its read, or when the run is gone if it never ended."""
        if not self._closed:
            self._closed = True
            self.poller.close()


class _RunPollers:
    """The open pollers of one run, by applied transform: state of that run only, never shared."""

    def __init__(self) -> None:
        self._states: weakref.WeakKeyDictionary[object, _PollerState] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def state_for(self, applied_ptransform) -> _PollerState:
        """The poller of ``applied_ptransform``, opened at its first evaluation."""
        with self._lock:
            state = self._states.get(applied_ptransform)
            if state is None:
                poller = applied_ptransform.transform.read.make_poller()
                poller.open()
                state = self._states[applied_ptransform] = _PollerState(poller)
                weakref.finalize(applied_ptransform, state.close)
        return state


class _PollingReadEvaluator(_TransformEvaluator):
    """One evaluation of a polling read: poll once, emit, hold the watermark, schedule itself again."""

    def __init__(self, evaluation_context, applied_ptransform, input_committed_bundle, side_inputs, pollers):
        super().__init__(evaluation_context, applied_ptransform, input_committed_bundle, side_inputs)
        self._pollers: _RunPollers = pollers

    def start_bundle(self) -> None:
        pass

    def process_element(self, element) -> None:
        pass

    def finish_bundle(self) -> TransformResult:
        read: ReadFromPoller = self._applied_ptransform.transform.read
        stop: StopRequest | None = self._applied_ptransform.transform.stop
        state = self._pollers.state_for(self._applied_ptransform)
        with state.lock:
            if state.done:  # already ended (a stop request): nothing more, watermark at +inf
                result = PollResult([], None, done=True)
            elif stop is not None and stop.requested:
                state.done = True
                state.close()  # checkpoints the source where it stands
                result = PollResult([], None, done=True)
            else:
                result = state.poller.poll()
                if result.done:
                    state.done = True
                    state.close()
        bundles = []
        if result.elements:
            bundle = self._evaluation_context.create_bundle(list(self._outputs)[0])
            for element, ts_ms in result.elements:
                bundle.output(GlobalWindows.windowed_value(element, timestamp=Timestamp(micros=ts_ms * 1000)))
            bundles.append(bundle)
        if result.done:
            return TransformResult(self, bundles, [], None, {None: WatermarkManager.WATERMARK_POS_INF})
        if not result.elements:
            time.sleep(read.pacing.poll_interval_s)
        again = self._evaluation_context.create_bundle(pvalue.PBegin(self._applied_ptransform.transform.pipeline))
        hold = (
            Timestamp(micros=result.watermark_ms * 1000)
            if result.watermark_ms is not None
            else WatermarkManager.WATERMARK_NEG_INF
        )
        return TransformResult(self, bundles, [again], None, {None: hold})


class _PollingReadOverride(PTransformOverride):
    def __init__(self, stop: StopRequest | None) -> None:
        self._stop = stop

    def matches(self, applied_ptransform) -> bool:
        return isinstance(applied_ptransform.transform, ReadFromPoller)

    def get_replacement_transform_for_applied_ptransform(self, applied_ptransform):
        return _DirectPollingRead(applied_ptransform.transform, self._stop)


class _DoFnFacts:
    """What Beam's direct runner asks of a ParDo's DoFn on every bundle, asked once per step.

    ``userstate.get_dofn_specs`` wraps every method of the DoFn to read its parameters; Beam
    calls it (through ``is_stateful_dofn``) to schedule each bundle and again to start it.
    Streaming in small bundles, those calls were ~16 % of the job's CPU (py-spy, 100 K
    sessions/s); the answers depend only on the DoFn's class and specs, fixed for the run."""

    def __init__(self) -> None:
        self._facts: dict[int, tuple[object, bool, tuple]] = {}
        self._lock = threading.Lock()

    def of(self, applied_ptransform) -> tuple[bool, tuple]:
        """(stateful, timer specs) of a ParDo step's DoFn."""
        key = id(applied_ptransform)
        with self._lock:
            known = self._facts.get(key)
        if known is not None and known[0] is applied_ptransform:
            return known[1], known[2]
        dofn = applied_ptransform.transform.dofn
        stateful = userstate.is_stateful_dofn(dofn)
        timers = tuple(userstate.get_dofn_specs(dofn)[1]) if stateful else ()
        with self._lock:
            self._facts[key] = (applied_ptransform, stateful, timers)  # the step itself: ids are reused
        return stateful, timers


class _InProcessValueState(ReadModifyWriteRuntimeState):
    """A value state kept as the object itself: the local runner's state never leaves the process."""

    def _encode(self, value):
        return value

    def _decode(self, value):
        return value


class _InProcessStateContext(DirectUserStateContext):
    """Beam's direct-runner state with value states (``ReadModifyWriteStateSpec``) not encoded.

    Beam encodes a value state with its coder on every write and decodes it on every read, so a
    DoFn that keeps a large value pays its size on each element: the dedupe memory (up to 4 M ids,
    32 MB per shard) cost ~47 ms per batch in pickling alone, growing as it filled, and a streaming
    run slowed after its first two minutes. Here nothing reads the encoded form (no checkpoint, no
    other process), and a bundle that fails fails the run, so a value mutated before its write is
    never seen by a retry. Flink and the other portable runners keep encoding it, as they must."""

    def get_state(self, state_spec, key, window):
        if not isinstance(state_spec, userstate.ReadModifyWriteStateSpec):
            return super().get_state(state_spec, key, window)
        # Beam 2.77's DirectUserStateContext.get_state with the runtime state's class swapped
        # (tests/unit/test_local_runner_isolation.py pins its source).
        assert state_spec in self.all_state_specs
        cache_key = (self.key_coder.encode(key), window, state_spec)
        if cache_key not in self.cached_states:
            self.cached_states[cache_key] = _InProcessValueState(
                state_spec, self.state_tags[state_spec], lambda: self._get_underlying_state(state_spec, key, window)
            )
        return self.cached_states[cache_key]


class _ParDoOnceEvaluator(_ParDoEvaluator):
    """Beam's ParDo evaluator with the DoFn's introspection asked once per step (``_DoFnFacts``)
    and value states kept unencoded (``_InProcessStateContext``)."""

    def __init__(self, evaluation_context, applied_ptransform, input_committed_bundle, side_inputs, facts):
        super().__init__(evaluation_context, applied_ptransform, input_committed_bundle, side_inputs)
        self._facts = facts

    def start_bundle(self):
        # Beam 2.77's _ParDoEvaluator.start_bundle with is_stateful_dofn/get_dofn_specs answered by
        # _DoFnFacts: keep in step with it (tests/unit/test_local_runner_isolation.py pins its source).
        transform = self._applied_ptransform.transform
        self._tagged_receivers = _TaggedReceivers(self._evaluation_context)
        for output_tag in self._applied_ptransform.outputs:
            output_pcollection = pvalue.PCollection(None, tag=output_tag)
            output_pcollection.producer = self._applied_ptransform
            self._tagged_receivers[output_tag] = self._evaluation_context.create_bundle(output_pcollection)
            self._tagged_receivers[output_tag].tag = output_tag
        self._counter_factory = counters.CounterFactory()
        dofn = pickler.roundtrip(transform.dofn) if self._perform_dofn_pickle_test else transform.dofn
        args = transform.args if hasattr(transform, "args") else []
        kwargs = transform.kwargs if hasattr(transform, "kwargs") else {}
        self.user_state_context = None
        self.user_timer_map = {}
        stateful, timer_specs = self._facts.of(self._applied_ptransform)
        if stateful:
            kv_type_hint = self._applied_ptransform.inputs[0].element_type
            if kv_type_hint and kv_type_hint != Any:
                coder = coders.registry.get_coder(kv_type_hint)
                self.key_coder = coder.key_coder()
            else:
                self.key_coder = coders.registry.get_coder(Any)
            self.user_state_context = _InProcessStateContext(self._step_context, dofn, self.key_coder)
            for timer_spec in timer_specs:
                self.user_timer_map["user/%s" % timer_spec.name] = timer_spec  # noqa: UP031 - as in Beam
        self.runner = DoFnRunner(
            dofn,
            args,
            kwargs,
            self._side_inputs,
            self._applied_ptransform.inputs[0].windowing,
            tagged_receivers=self._tagged_receivers,
            step_name=self._applied_ptransform.full_label,
            state=DoFnState(self._counter_factory),
            user_state_context=self.user_state_context,
        )
        self.runner.setup()
        self.runner.start()


class _StreamingEvaluatorRegistry(TransformEvaluatorRegistry):
    """Beam's evaluators, plus the polling read's with this run's pollers, and ParDo's with
    its DoFn introspection asked once per step (``_DoFnFacts``).

    Beam's registry offers a class-level ``_test_evaluators_overrides`` dict; writing
    to it would change every later DirectRunner in the process, so this run's
    registry answers for ``_DirectPollingRead`` and ``ParDo`` itself instead."""

    def __init__(self, evaluation_context, pollers: _RunPollers) -> None:
        super().__init__(evaluation_context)
        self._pollers = pollers
        self._facts = _DoFnFacts()

    def get_evaluator(self, applied_ptransform, input_committed_bundle, side_inputs):
        transform = applied_ptransform.transform
        if isinstance(transform, _DirectPollingRead):
            return _PollingReadEvaluator(
                self._evaluation_context, applied_ptransform, input_committed_bundle, side_inputs, self._pollers
            )
        if type(transform) is core.ParDo and self._evaluators.get(core.ParDo) is _ParDoEvaluator:
            # Exactly ParDo (subclasses such as ProcessKeyedElements keep their own evaluators).
            assert bool(applied_ptransform.side_inputs) == bool(side_inputs)
            return _ParDoOnceEvaluator(
                self._evaluation_context, applied_ptransform, input_committed_bundle, side_inputs, self._facts
            )
        return super().get_evaluator(applied_ptransform, input_committed_bundle, side_inputs)

    def should_execute_serially(self, applied_ptransform):
        # Beam's answer (a ParDo runs serially when its DoFn is stateful), asked once per step.
        if isinstance(applied_ptransform.transform, core.ParDo):
            return self._facts.of(applied_ptransform)[0]
        return super().should_execute_serially(applied_ptransform)


class _PerBundleMetricsTransformExecutor(TransformExecutor):
    """Evaluates one bundle with a state sampler of its own, so user metrics count every bundle.

    Beam's executor gives each bundle a new MetricsContainer but hands it to a
    per-thread StateSampler that caches its scoped states by step name, so every
    later bundle of a step updates the first bundle's (already committed) container
    and its counts are lost. A sampler per bundle, current only while the bundle
    runs, keeps each bundle's counts in its own container."""

    def call(self, state_sampler):
        fresh = statesampler.StateSampler("", counters.CounterFactory())
        statesampler.set_current_tracker(fresh)
        try:
            return super().call(fresh)
        finally:
            statesampler.set_current_tracker(state_sampler)


class _PerBundleMetricsParallelExecutor(_ExecutorServiceParallelExecutor):
    """Beam's parallel executor, scheduling ``_PerBundleMetricsTransformExecutor``s."""

    def schedule_consumption(self, consumer_applied_ptransform, committed_bundle, fired_timers, on_complete):
        # Beam 2.77's schedule_consumption, with the TransformExecutor class swapped:
        # keep in step with it (tests/unit/test_local_runner_isolation.py pins its source).
        assert consumer_applied_ptransform
        assert committed_bundle
        assert on_complete
        if self.transform_evaluator_registry.should_execute_serially(consumer_applied_ptransform):
            evaluation_state = self.transform_executor_services.serial(consumer_applied_ptransform)
        else:
            evaluation_state = self.transform_executor_services.parallel()
        transform_executor = _PerBundleMetricsTransformExecutor(
            self.transform_evaluator_registry,
            self.evaluation_context,
            committed_bundle,
            fired_timers,
            consumer_applied_ptransform,
            on_complete,
            evaluation_state,
        )
        evaluation_state.schedule(transform_executor)


class _PerBundleMetricsExecutor(Executor):
    """Beam's ``Executor`` facade over ``_PerBundleMetricsParallelExecutor``."""

    def __init__(self, value_to_consumers, transform_evaluator_registry, evaluation_context) -> None:
        # Not super().__init__: it would build (and start threads for) Beam's own parallel executor.
        self._executor = _PerBundleMetricsParallelExecutor(
            value_to_consumers, transform_evaluator_registry, evaluation_context
        )


class _CrossLanguageCheck(PipelineVisitor):
    def visit_transform(self, applied_ptransform) -> None:
        if isinstance(applied_ptransform.transform, ExternalTransform):
            raise RuntimeError(
                "the local streaming runner does not run cross-language transforms "
                "(kafka impl=xlang): use the Flink, Dataflow or Prism runner"
            )


class _TestStreamUse(PipelineVisitor):
    def __init__(self) -> None:
        self.found = False

    def visit_transform(self, applied_ptransform) -> None:
        if isinstance(applied_ptransform.transform, TestStream):
            self.found = True


class LocalStreamingRunner(BundleBasedDirectRunner):
    """BundleBasedDirectRunner whose ``ReadFromPoller`` sources stream while the pipeline runs.

    ``stop``: when it is set, the reads end and the run drains and finishes normally.

    Nothing in Beam is patched: ``run_pipeline`` is Beam 2.77's
    ``BundleBasedDirectRunner.run_pipeline`` with this runner's executor (a state
    sampler per bundle) and evaluator registry (the polling read, with this run's
    pollers) in place of Beam's, so other runners in the process are unaffected.
    """

    def __init__(self, stop: StopRequest | None = None) -> None:
        super().__init__()
        self.stop = stop

    def run_pipeline(self, pipeline, options):
        if self.stop is not None:
            self.stop.armed = True
        pipeline.replace_all([_PollingReadOverride(self.stop)])
        pipeline.visit(_CrossLanguageCheck())
        test_stream = _TestStreamUse()
        pipeline.visit(test_stream)
        clock = TestClock() if test_stream.found else RealClock()
        pipeline.replace_all(_get_transform_overrides(options))

        self.consumer_tracking_visitor = ConsumerTrackingPipelineVisitor()
        pipeline.visit(self.consumer_tracking_visitor)
        evaluation_context = EvaluationContext(
            options,
            BundleFactory(stacked=options.view_as(DirectOptions).direct_runner_use_stacked_bundle),
            self.consumer_tracking_visitor.root_transforms,
            self.consumer_tracking_visitor.value_to_consumers,
            self.consumer_tracking_visitor.step_names,
            self.consumer_tracking_visitor.views,
            clock,
        )
        executor = _PerBundleMetricsExecutor(
            self.consumer_tracking_visitor.value_to_consumers,
            _StreamingEvaluatorRegistry(evaluation_context, _RunPollers()),
            evaluation_context,
        )
        RuntimeValueProvider.set_runtime_options({})  # as Beam's: the direct runner injects no runtime values
        executor.start(self.consumer_tracking_visitor.root_transforms)
        return DirectPipelineResult(executor, evaluation_context)
