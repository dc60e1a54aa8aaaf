"""Outputs written once per checkpoint, under names a replay overwrites (``--exactly_once_outputs``).

Why: on Flink a job restored from a checkpoint or savepoint replays everything after it. A writer
that names files per bundle would then write the replayed records a second time. Two Beam
mechanisms, both honoured by Beam's Flink runner for Python stages, make each output file
appear once:

- ``StableParDo``: a ParDo that requires stable input (``ParDoPayload.requires_stable_input``,
  which the Python SDK has no API for). Flink's runner keeps the stage's input in the checkpoint
  and gives it to the DoFn only after that checkpoint completed (``BufferingDoFnRunner``); after a
  restore it gives the same elements again. So what a writer sees was already made durable
  upstream (the sources' positions are past it), and a replay sees exactly the same elements.
- Names from content (``content_name``): a file is named by a hash of what it holds, so the
  replay of an element rewrites the same file (an atomic rename: same name, same bytes).

Elements are gathered first (``GatherForWrite``: a GroupByKey in the global window fired every
``flush_s`` of processing time, and once more when the input ends) so each element, hence each
file, holds a second's worth of rows rather than one poll's. The price: a file appears after the
checkpoint that covers its rows (``--checkpointing_interval`` plus ``flush_s``), not within a bundle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.portability import common_urns
from apache_beam.transforms import trigger, window

__all__ = ["StableParDo", "GatherForWrite", "content_name", "flush_trigger", "table_digest"]


class StableParDo(beam.ParDo):
    """A ``beam.ParDo`` whose input a runner must make stable (replayable, identical) before it runs."""

    def to_runner_api_parameter(self, context, **extra_kwargs):  # type: ignore[override]
        urn, payload = super().to_runner_api_parameter(context, **extra_kwargs)
        payload.requires_stable_input = True
        context.add_requirement(common_urns.requirements.REQUIRES_STABLE_INPUT.urn)
        return urn, payload


class _KeyBy(beam.DoFn):
    def __init__(self, key_fn: Callable[[Any], Iterator[tuple[Any, Any]]]) -> None:
        self._key_fn = key_fn

    def process(self, element) -> Iterator[tuple[Any, Any]]:
        yield from self._key_fn(element)


def flush_trigger(flush_s: int) -> trigger.TriggerFn:
    """A pane every ``flush_s`` seconds of processing time, and a last one when the input ends.

    ``AfterWatermark(early=AfterProcessingTime(flush_s))`` in the global window: the early panes
    fire ``flush_s`` after the first element of a pane (repeatedly, as ``Repeatedly`` did); the
    watermark passes the global window's end only when the input ends (a bounded or stopped source,
    a TestStream's ``advance_watermark_to_infinity``, a drain), and that fires the on-time pane
    with whatever is still gathered.

    Why not ``Repeatedly(AfterProcessingTime(flush_s))`` alone: Java runners (Flink) emit what a
    window still holds when it is garbage-collected, but Python's trigger driver (the direct
    runners, the FnApiRunner) has no such final firing. Its pending processing-time timer then
    decides: on a real clock it fires up to ``flush_s`` late; on the TestClock a TestStream brings
    (time moves only when the stream says so) it never fires, the element hold at the window's end
    keeps the step's output watermark short of +inf, and Beam's executor does not shut down while a
    step below +inf has a processing-time timer set: the run hung, its rows never written.
    Why not ``Repeatedly(AfterAny(AfterProcessingTime(flush_s), AfterWatermark()))``: Python's
    ``AfterAny.on_fire`` asks its subtriggers ``should_fire`` in the watermark domain only, so a
    processing-time firing never resets ``AfterProcessingTime`` and no second early pane ever
    fires.

    A cost on Python's trigger driver: while an on-time pane is to come it keeps the watermark hold
    of every element batch it gathered (one entry per key and bundle, copied with the key's state
    each bundle) until the window ends. The archive's keys are (hour partition, writer), so a key
    takes new rows for about an hour and the list stays a few thousand entries long (dead letters,
    one key, gather only with exactly-once outputs, on Flink, whose Java driver keeps one hold)."""
    return trigger.AfterWatermark(early=trigger.AfterProcessingTime(flush_s))


class GatherForWrite(beam.PTransform):
    """Elements -> ``(key, [values])`` every ``flush_s`` seconds of processing time per key, and
    the rest when the input ends (``flush_trigger``).

    ``key_fn(element)`` yields ``(key, value)`` pairs (an archive batch: one per partition).
    The pieces stay in the runner's keyed state until the pane fires, so they are in the
    checkpoint; a pane that fired after the last completed checkpoint is never written (its
    writer's input was not yet stable) and fires again, maybe otherwise cut, after a restore."""

    def __init__(self, key_fn: Callable[[Any], Iterator[tuple[Any, Any]]], flush_s: int = 1) -> None:
        super().__init__()
        self._key_fn = key_fn
        self._flush_s = flush_s

    def expand(self, elements):
        return (
            elements
            | "KeyForWrite" >> beam.ParDo(_KeyBy(self._key_fn))
            | "EveryFlush"
            >> beam.WindowInto(
                window.GlobalWindows(),
                trigger=flush_trigger(self._flush_s),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
            )
            | "GatherPieces" >> beam.GroupByKey()
        )


def table_digest(table: pa.Table | pa.RecordBatch, *salt: str) -> str:
    """A hex digest of ``table``'s rows (its Arrow IPC bytes) and ``salt``."""
    digest = hashlib.sha256("\x1f".join(salt).encode())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write(table)
    digest.update(sink.getvalue())
    return digest.hexdigest()


def content_name(prefix: str, digest: str, suffix: str) -> str:
    """``<prefix>-<32 hex of digest><suffix>``: the same content, the same name."""
    return f"{prefix}-{digest[:32]}{suffix}"
