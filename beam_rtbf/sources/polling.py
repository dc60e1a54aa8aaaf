"""``ReadFromPoller``: one streaming read over a ``Poller``, in the form each runner needs.

- Portable runners (Flink, the FnApiRunner): a splittable DoFn that polls,
  reports its watermark through a ManualWatermarkEstimator and checkpoints
  (``defer_remainder``) when the source has nothing, so the runner can
  schedule other work and resume it.
- The local streaming runner (``beam_rtbf.local_runner``): replaced by a
  polling root evaluator, because the BundleBasedDirectRunner cannot run
  splittable DoFns and holds their watermark at -inf until they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import apache_beam as beam
from apache_beam.internal import pickler
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms import window
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp

from beam_rtbf.sources.base import Poller

__all__ = ["ReadFromPoller"]

_MAX_POLLS = 2**62


class _PollRestrictions(RestrictionProvider):
    """Each offset is one poll; the range is open-ended until the poller reports ``done``."""

    def initial_restriction(self, element) -> OffsetRange:
        return OffsetRange(0, _MAX_POLLS)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction: OffsetRange) -> int:
        return 1


class _PollFn(beam.DoFn):
    def __init__(self, make_poller: Callable[[], Poller], poll_interval_s: float, polls_per_call: int) -> None:
        self._make_poller = make_poller
        self._poll_interval_s = poll_interval_s
        self._polls_per_call = polls_per_call
        self._poller: Poller | None = None

    def setup(self) -> None:
        self._poller = self._make_poller()
        self._poller.open()

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        _impulse,
        tracker=beam.DoFn.RestrictionParam(_PollRestrictions()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ) -> Iterator:
        position = tracker.current_restriction().start
        for _ in range(self._polls_per_call):
            if not tracker.try_claim(position):
                return
            result = self._poller.poll()
            for element, ts_ms in result.elements:
                yield window.TimestampedValue(element, Timestamp(micros=ts_ms * 1000))
            if result.done:
                tracker.try_claim(_MAX_POLLS - 1)
                return
            if result.watermark_ms is not None:
                watermark.set_watermark(Timestamp(micros=result.watermark_ms * 1000))
            position += 1
            if not result.elements:
                break
        tracker.defer_remainder(Duration.of(self._poll_interval_s))

    def teardown(self) -> None:
        if self._poller is not None:
            self._poller.close()


READ_FROM_POLLER_URN = "beam:transform:rtbf:read_from_poller:v1"


class ReadFromPoller(beam.PTransform):
    """An unbounded (or self-ending) read driven by ``make_poller()``.

    It carries a URN (payload: the pickled transform) so it survives Beam's
    runner-API round trip and the local streaming runner can still find it.
    """

    def __init__(
        self, make_poller: Callable[[], Poller], poll_interval_s: float = 0.05, polls_per_call: int = 100
    ) -> None:
        super().__init__()
        self.make_poller = make_poller
        self.poll_interval_s = poll_interval_s
        self.polls_per_call = polls_per_call

    def to_runner_api_parameter(self, unused_context):
        return READ_FROM_POLLER_URN, pickler.dumps(self)

    @staticmethod
    @beam.PTransform.register_urn(READ_FROM_POLLER_URN, None)
    def from_runner_api_parameter(unused_ptransform, payload, unused_context):
        return pickler.loads(payload)

    def expand(self, pbegin):
        return (
            pbegin
            | "Start" >> beam.Impulse()
            | "Poll" >> beam.ParDo(_PollFn(self.make_poller, self.poll_interval_s, self.polls_per_call))
        )
