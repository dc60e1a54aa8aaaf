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
"""

from __future__ import annotations

import threading
import time
import weakref

from apache_beam import pvalue
from apache_beam.pipeline import PTransformOverride
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.direct.executor import TransformExecutor
from apache_beam.runners.direct.transform_evaluator import (
    TransformEvaluatorRegistry,
    TransformResult,
    _TransformEvaluator,
)
from apache_beam.runners.direct.watermark_manager import WatermarkManager
from apache_beam.runners.worker import statesampler
from apache_beam.transforms import PTransform
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


_POLLERS: weakref.WeakKeyDictionary[object, _PollerState] = weakref.WeakKeyDictionary()
_POLLERS_LOCK = threading.Lock()


class _PollingReadEvaluator(_TransformEvaluator):
    def start_bundle(self) -> None:
        pass

    def process_element(self, element) -> None:
        pass

    def _state(self) -> _PollerState:
        key = self._applied_ptransform
        with _POLLERS_LOCK:
            state = _POLLERS.get(key)
            if state is None:
                poller = self._applied_ptransform.transform.read.make_poller()
                poller.open()
                state = _POLLERS[key] = _PollerState(poller)
                weakref.finalize(key, poller.close)
        return state

    def finish_bundle(self) -> TransformResult:
        read: ReadFromPoller = self._applied_ptransform.transform.read
        stop: StopRequest | None = self._applied_ptransform.transform.stop
        state = self._state()
        with state.lock:
            if state.done:  # already ended (a stop request): nothing more, watermark at +inf
                result = PollResult([], None, done=True)
            elif stop is not None and stop.requested:
                state.done = True
                state.poller.close()  # checkpoints the source where it stands
                result = PollResult([], None, done=True)
            else:
                result = state.poller.poll()
                if result.done:
                    state.done = True
                    state.poller.close()
        bundles = []
        if result.elements:
            bundle = self._evaluation_context.create_bundle(list(self._outputs)[0])
            for element, ts_ms in result.elements:
                bundle.output(GlobalWindows.windowed_value(element, timestamp=Timestamp(micros=ts_ms * 1000)))
            bundles.append(bundle)
        if result.done:
            return TransformResult(self, bundles, [], None, {None: WatermarkManager.WATERMARK_POS_INF})
        if not result.elements:
            time.sleep(read.poll_interval_s)
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


def _fresh_sampler_per_bundle() -> None:
    """Make user metrics count every bundle, not only the first one per step and thread.

    The BundleBasedDirectRunner gives each bundle a new MetricsContainer but hands
    it to a per-thread StateSampler that caches its scoped states by step name,
    so every later bundle of a step updates the first bundle's (already
    committed) container and its counts are lost. A sampler per bundle fixes it.
    """
    if getattr(TransformExecutor.call, "_rtbf_patched", False):
        return
    original = TransformExecutor.call

    def call(self, state_sampler):
        fresh = statesampler.StateSampler("", counters.CounterFactory())
        statesampler.set_current_tracker(fresh)
        try:
            return original(self, fresh)
        finally:
            statesampler.set_current_tracker(state_sampler)

    call._rtbf_patched = True
    TransformExecutor.call = call


class LocalStreamingRunner(BundleBasedDirectRunner):
    """BundleBasedDirectRunner whose ``ReadFromPoller`` sources stream while the pipeline runs.

    ``stop``: when it is set, the reads end and the run drains and finishes normally.
    """

    def __init__(self, stop: StopRequest | None = None) -> None:
        super().__init__()
        self.stop = stop

    def run_pipeline(self, pipeline, options):
        if self.stop is not None:
            self.stop.armed = True
        _fresh_sampler_per_bundle()
        TransformEvaluatorRegistry._test_evaluators_overrides[_DirectPollingRead] = _PollingReadEvaluator
        pipeline.replace_all([_PollingReadOverride(self.stop)])
        return super().run_pipeline(pipeline, options)
