"""Beam step: parse erasure-request input; main output ``ErasureRequest``, ``deadletter`` for rejects.

The parsing itself is pure and lives in ``beam_rtbf.parse.request_events``.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.parse.lines import DEFAULT_MAX_RECORD_BYTES
from beam_rtbf.parse.request_events import RequestSelector, parse_request_chunk
from beam_rtbf.records import RawBatch

__all__ = ["ParseRequests", "DEADLETTER_TAG"]

DEADLETTER_TAG = "deadletter"


class _ParseRequestsFn(beam.DoFn):
    def __init__(self, selector: RequestSelector, max_record_bytes: int) -> None:
        self._selector = selector
        self._max_record_bytes = max_record_bytes
        self._in = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.REQUESTS_IN)
        self._ignored = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.REQUESTS_IGNORED)
        self._dead = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.REQUESTS_DEAD_LETTERED)

    def process(self, element: RawBatch) -> Iterator:
        if not isinstance(element, RawBatch):
            raise TypeError(f"ParseRequests got {type(element).__name__}; expected RawBatch")
        parsed = parse_request_chunk(element, self._selector, self._max_record_bytes)
        self._in.inc(parsed.records_in)
        self._ignored.inc(parsed.ignored)
        self._dead.inc(len(parsed.dead_letters))
        for letter in parsed.dead_letters:
            yield beam.pvalue.TaggedOutput(DEADLETTER_TAG, letter)
        yield from parsed.requests


class ParseRequests(beam.PTransform):
    """Parse request input, keeping only erasure requests; main output ErasureRequest."""

    def __init__(
        self, selector: RequestSelector = RequestSelector(), max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    ) -> None:
        super().__init__()
        self._selector = selector
        self._max_record_bytes = max_record_bytes

    def expand(self, pcoll):
        return pcoll | "ParseRequestEvents" >> beam.ParDo(
            _ParseRequestsFn(self._selector, self._max_record_bytes)
        ).with_outputs(DEADLETTER_TAG, main="requests")
