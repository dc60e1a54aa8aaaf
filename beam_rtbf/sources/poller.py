"""The reader core every streaming form drives: open, poll, close (and checkpoint, restore).

Its own module so that the streaming read (``polling.py``) and the ``Source`` interface
(``base.py``) both build on it without importing each other.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

__all__ = ["Poller", "PollResult"]


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
