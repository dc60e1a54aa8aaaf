"""What a source is: a bounded Beam read, and/or a poller for the streaming forms.

A source yields elements of two kinds: ``RawBatch`` (bytes still to parse) or
``pyarrow.RecordBatch`` (already structured, e.g. the generator). Parsing
accepts both, so every source shares one validation and dead-letter path.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import apache_beam as beam

from beam_rtbf.sources.spec import SourceSpec, check_params

__all__ = ["Source", "Poller", "PollResult", "STREAM_KINDS"]

STREAM_KINDS = ("sessions", "requests")


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


class Source(abc.ABC):
    """A configured source for one stream kind (sessions or requests).

    ``PARAMS`` lists every URI parameter the source reads, once; ``PARAM_PREFIXES``
    the pass-through families (``kafka.``). Any other parameter is refused here,
    before the subclass reads its configuration."""

    scheme: str = ""
    PARAMS: tuple[str, ...] = ()
    PARAM_PREFIXES: tuple[str, ...] = ()

    def __init__(self, spec: SourceSpec, stream: str) -> None:
        if stream not in STREAM_KINDS:
            raise ValueError(f"stream must be one of {STREAM_KINDS}, not {stream!r}")
        check_params(spec, self.PARAMS, self.PARAM_PREFIXES)
        self.spec = spec
        self.stream = stream

    @property
    @abc.abstractmethod
    def bounded(self) -> bool:
        """True when the source ends by itself (a replay or a fixed-size generator)."""

    @abc.abstractmethod
    def read(self) -> beam.PTransform:
        """The bounded Beam read (PBegin -> elements)."""

    def poller(self) -> Poller:
        """A poller for the streaming forms."""
        raise NotImplementedError(f"{self.spec.scheme}:// has no streaming form")

    def streaming_read(self) -> beam.PTransform:
        """The unbounded read: beam-rtbf's own reader over ``poller()`` unless a source overrides it."""
        from beam_rtbf.sources.polling import ReadFromPoller

        return ReadFromPoller(self.poller)

    def check(self) -> None:
        """Raise ``ValueError`` with one clear message if the stream cannot be read at all."""
        if not self.bounded:
            self.poller().check()

    def identity(self) -> dict[str, Any]:
        """What a bounded run reads, for the run ledger's input fingerprint: the URI by default
        (a generator's URI fixes its output); file sources add their files' sizes and mtimes."""
        return {"stream": self.stream, "uri": self.spec.uri}

    def describe(self) -> dict[str, Any]:
        return {"uri": self.spec.uri, "bounded": self.bounded}
