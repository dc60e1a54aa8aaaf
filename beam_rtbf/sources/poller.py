"""The reader core every streaming form drives: open, poll, close (and checkpoint, restore).

A source whose stream has units of work (Kinesis shards, Kafka partitions, generator shards)
also offers ``ShardedPollers``: what the units are now (``discover``) and a poller for some of
them (``poller_for``), so the splittable-DoFn read gives each unit a restriction of its own.

Its own module so that the streaming read (``polling.py``) and the ``Source`` interface
(``base.py``) both build on it without importing each other.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

__all__ = ["Poller", "PollResult", "ShardInfo", "ShardedPollers", "roots_of", "owner"]


@dataclasses.dataclass
class PollResult:
    """Elements with their event timestamps (millis), the new watermark, and whether the source ended."""

    elements: list[tuple[Any, int]]
    watermark_ms: int | None
    done: bool = False


class Poller(abc.ABC):
    """One reader core: open, poll, close. Both streaming forms (the splittable DoFn and the
    local streaming runner's polling root) drive the same poller."""

    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect; raise a clear error for a missing stream or bad credentials."""

    @abc.abstractmethod
    def poll(self) -> PollResult:
        """Return what is available now (possibly nothing); never block for long."""

    def checkpoint(self) -> dict:
        """Where the reader stands (shard sequence numbers, partition offsets), JSON-able.

        The splittable-DoFn form keeps it in its restriction, so a residual resumed on
        another worker continues exactly after what was emitted."""
        return {}

    def restore(self, state: dict) -> None:  # noqa: B027 - optional hook
        """Resume from a ``checkpoint()``; called before ``open()``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def check(self) -> None:
        """Fail fast, before a pipeline starts, on an unreachable system or a missing stream.

        Must not move positions (no commit, no checkpoint write); pollers whose ``close``
        does so override this."""
        self.open()
        self.close()


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One unit of work of a stream: a shard or partition id and the ids of its parents.

    ``parents`` are the listed parents (a Kinesis child after a split or merge); a unit with
    none is a *root*. ``closed``: the stream will add nothing more to it (a Kinesis shard with
    an EndingSequenceNumber)."""

    shard_id: str
    parents: tuple[str, ...] = ()
    closed: bool = False


class ShardedPollers(abc.ABC):
    """The units of work of one stream and a poller for some of them (picklable: it travels
    to the workers).

    The read (``ReadFromPoller``) gives every *root* a restriction of its own: discovery
    (``discover``, every ``discovery_interval_s``) emits each new root once and the runner
    spreads them over workers. A poller made by ``poller_for(roots)`` reads those roots and
    every descendant whose first listed parent it reads (``owner``), so a child is read by
    the reader of its parent, after the parent's end, whatever worker that is."""

    discovery_interval_s: float = 10.0
    #: End discovery once no new root appeared for this long (None: never; a bounded replay, tests).
    idle_stop_s: float | None = None

    @abc.abstractmethod
    def discover(self) -> list[ShardInfo]:
        """Every unit listed now; raise ``ValueError`` with one clear line if the stream is unreachable."""

    @abc.abstractmethod
    def poller_for(self, roots: list[str], added: bool = False) -> Poller:
        """A poller reading ``roots`` and their descendants only; ``restore`` then ``open`` as usual.

        ``added``: the roots appeared while the read was running (not at its first discovery),
        so each is read from its very beginning whatever the source's start position says."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``discover`` opened."""


def roots_of(shards: list[ShardInfo], seen: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The ids of ``shards`` that are roots: no parent listed now or before (``seen``).

    A shard already in ``seen`` (listed at an earlier discovery, possibly as a child whose
    parent has since expired out of retention) is never a new root: its reader has it."""
    known = {s.shard_id for s in shards} | set(seen)
    return [s.shard_id for s in shards if s.shard_id not in seen and not any(p in known for p in s.parents)]


def owner(shard: ShardInfo, known: set[str] | frozenset[str]) -> str | None:
    """The parent whose reader reads ``shard`` after it: the first known (listed now or before)
    parent, Kinesis' ParentShardId before AdjacentParentShardId; None for a root."""
    return next((p for p in shard.parents if p in known), None)
