"""Beam step: parse session input into Arrow batches, with a ``deadletter`` output for rejects.

The parsing itself is pure and lives in ``beam_rtbf.parse.session_batch``; this
module only adapts it to Beam (counters, tagged outputs, progress logging).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.parse.lines import DEFAULT_MAX_RECORD_BYTES
from beam_rtbf.parse.session_batch import ParsedChunk, parse_session_chunk, validate_session_batch
from beam_rtbf.records import DeadLetter, RawBatch, now_ms

__all__ = ["ParseSessions", "DEADLETTER_TAG", "ProgressLog"]

DEADLETTER_TAG = "deadletter"
_LOGGER = logging.getLogger("beam_rtbf.progress")


class ProgressLog:
    """Logs the sessions one parser instance has parsed, at most every ``every_s`` seconds.

    One per DoFn instance (made in ``setup``), never shared module state: each
    parsing worker thread logs its own count and rate. The run's total is the
    ``sessions_in`` counter, which the runner aggregates for the summary.
    """

    def __init__(self, every_s: float = 5.0, logger: logging.Logger = _LOGGER) -> None:
        self.every_s = every_s
        self.logger = logger
        self.count = 0
        self.started = self.last = time.monotonic()

    def add(self, n: int) -> None:
        self.count += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self.logger.info("progress: %d sessions parsed, %.0f/s", self.count, self.count / (now - self.started))


class _ParseSessionsFn(beam.DoFn):
    """Raw chunks or structured batches -> valid Arrow batches + tagged dead letters."""

    def __init__(self, max_record_bytes: int) -> None:
        self._max_record_bytes = max_record_bytes
        self._sessions_in = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.SESSIONS_IN)
        self._dead = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.SESSIONS_DEAD_LETTERED)
        self._progress: ProgressLog | None = None

    def setup(self) -> None:
        self._progress = ProgressLog()

    def process(self, element) -> Iterator:
        if isinstance(element, RawBatch):
            parsed = parse_session_chunk(element, self._max_record_bytes)
        elif isinstance(element, pa.RecordBatch):
            parsed = _parse_structured(element)
        else:
            raise TypeError(f"ParseSessions got {type(element).__name__}; expected RawBatch or RecordBatch")
        self._sessions_in.inc(parsed.records_in)
        if self._progress is not None:
            self._progress.add(parsed.records_in)
        if parsed.dead_letters:
            self._dead.inc(len(parsed.dead_letters))
            for letter in parsed.dead_letters:
                yield beam.pvalue.TaggedOutput(DEADLETTER_TAG, letter)
        if parsed.batch.num_rows:
            yield parsed.batch


def _parse_structured(element: pa.RecordBatch) -> ParsedChunk:
    """A batch from a structured source (already columns): validated, rejects as JSON dead letters."""
    batch, rejects = validate_session_batch(element, now_ms())
    dead = []
    if rejects:
        rows = element.take(pa.array([i for i, _ in rejects])).to_pylist()
        dead = [
            DeadLetter(
                "sessions", "structured", f"row {i}", reason, json.dumps(row, sort_keys=True, default=str).encode()
            )
            for (i, reason), row in zip(rejects, rows)
        ]
    return ParsedChunk(batch, dead, element.num_rows)


class ParseSessions(beam.PTransform):
    """Parse session input; main output Arrow batches, ``deadletter`` output DeadLetter records."""

    def __init__(self, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        super().__init__()
        self._max_record_bytes = max_record_bytes

    def expand(self, pcoll):
        return pcoll | "ParseSessionChunks" >> beam.ParDo(_ParseSessionsFn(self._max_record_bytes)).with_outputs(
            DEADLETTER_TAG, main="sessions"
        )
