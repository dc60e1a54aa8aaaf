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
``flush_s`` of processing time) so each element, hence each file, holds a second's worth of rows
rather than one poll's. The price: a file appears after the checkpoint that covers its rows
(``--checkpointing_interval`` plus ``flush_s``), not within a bundle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.portability import common_urns
from apache_beam.transforms import trigger, window

__all__ = ["StableParDo", "GatherForWrite", "content_name", "table_digest"]


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


class GatherForWrite(beam.PTransform):
    """Elements -> ``(key, [values])`` every ``flush_s`` seconds of processing time per key.

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
                trigger=trigger.Repeatedly(trigger.AfterProcessingTime(self._flush_s)),
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
