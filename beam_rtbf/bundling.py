"""A DoFn base that handles a whole bundle at once: one registry round trip or
one index scan per bundle instead of one per element."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.windowed_value import WindowedValue

__all__ = ["BundleDoFn"]


def _windowed(value: Any, ts: Any, win: Any) -> WindowedValue | TaggedOutput:
    if isinstance(value, TaggedOutput):
        return TaggedOutput(value.tag, WindowedValue(value.value, ts, (win,)))
    return WindowedValue(value, ts, (win,))


class BundleDoFn(beam.DoFn):
    """Buffers elements (with timestamp and window) and calls ``handle_batch`` per bundle.

    ``handle_batch`` returns, for each input, an iterable of outputs; they are
    emitted with that input's timestamp and window (a ``TaggedOutput`` to its tag). The buffer is also flushed
    every ``max_batch`` elements so memory stays bounded.
    """

    max_batch = 1000

    def start_bundle(self) -> None:
        self._buffer: list[tuple[Any, Any, Any]] = []

    def process(self, element, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam) -> Iterator:
        self._buffer.append((element, timestamp, window))
        if len(self._buffer) >= self.max_batch:
            for value, ts, win in self._flush():
                yield _windowed(value, ts, win)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for value, ts, win in self._flush():
            yield _windowed(value, ts, win)

    def _flush(self) -> list[tuple[Any, Any, Any]]:
        if not self._buffer:
            return []
        buffered, self._buffer = self._buffer, []
        outputs = self.handle_batch([element for element, _, _ in buffered])
        emitted = []
        for (_, ts, win), produced in zip(buffered, outputs, strict=True):
            emitted.extend((value, ts, win) for value in produced)
        return emitted

    def handle_batch(self, elements: Sequence[Any]) -> Sequence[Iterable[Any]]:
        raise NotImplementedError
