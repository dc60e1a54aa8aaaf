"""What times the refresh of a streaming side input (the broadcast and bloom deletion sets).

Beam's ``PeriodicImpulse`` is a splittable DoFn that never ends: a job whose sources end keeps
running for it (on Flink, until it is cancelled), and on the embedded job service it never
writes a window. ``RefreshTicks`` ticks off the sessions stream instead: the first session batch
arms a processing-time timer that fires every ``interval_s`` (whether sessions arrive or not),
and when the sessions stream ends (its watermark passes the end of the global window) an
event-time timer clears it. So the ticks, the side input and the job end with the sessions.

The ticks are keyed to one key: each session batch sends one small marker, not its rows.
``--refresh_ticks=periodic_impulse`` keeps Beam's PeriodicImpulse (it refreshes even before the
first session arrives; the job then never ends by itself).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

__all__ = ["RefreshTicks", "TICK_SOURCES"]

TICK_SOURCES = ("sessions", "periodic_impulse")


class _TickEvery(beam.DoFn):
    """Emits the processing time (seconds) every ``interval_s`` from the first input until the input ends."""

    ARMED = ReadModifyWriteStateSpec("armed", BooleanCoder())
    TICK = TimerSpec("tick", TimeDomain.REAL_TIME)
    END = TimerSpec("end", TimeDomain.WATERMARK)

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s

    def process(
        self,
        _marker,
        armed=beam.DoFn.StateParam(ARMED),
        tick=beam.DoFn.TimerParam(TICK),
        end=beam.DoFn.TimerParam(END),
    ) -> Iterator:
        if not armed.read():
            armed.write(True)
            tick.set(Timestamp.of(time.time()))  # the first refresh at once
            end.set(window.GlobalWindow().max_timestamp())  # fires when the sessions stream has ended
        return iter(())

    @on_timer(TICK)
    def on_tick(self, tick=beam.DoFn.TimerParam(TICK)) -> Iterator[float]:
        now = time.time()
        tick.set(Timestamp.of(now + self._interval_s))
        yield now

    @on_timer(END)
    def on_end(self, tick=beam.DoFn.TimerParam(TICK)) -> Iterator:
        tick.clear()  # no more refreshes: the side input's last pane stands, the job can end
        return iter(())


class RefreshTicks(beam.PTransform):
    """``sessions`` -> a tick every ``interval_s`` while the sessions stream runs (see the module docstring)."""

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self._interval_s = interval_s

    def expand(self, sessions):
        return (
            sessions
            | "OneMarkerPerBatch" >> beam.Map(lambda _batch: (0, None))
            | "TickWhileSessionsRun" >> beam.ParDo(_TickEvery(self._interval_s))
        )
