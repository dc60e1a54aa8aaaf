"""What a source is: a bounded Beam read, and/or a poller for the streaming forms.

A source yields elements of two kinds: ``RawBatch`` (bytes still to parse) or
``pyarrow.RecordBatch`` (already structured, e.g. the generator). Parsing
accepts both, so every source shares one validation and dead-letter path.
"""

from __future__ import annotations

import abc
from typing import Any

import apache_beam as beam

from beam_rtbf.sources.poller import Poller, PollResult, ShardedPollers
from beam_rtbf.sources.polling import ReadFromPoller, ReadPacing
from beam_rtbf.sources.spec import SourceSpec, check_params

__all__ = ["Source", "Poller", "PollResult", "STREAM_KINDS"]

STREAM_KINDS = ("sessions", "requests")


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

    def shards(self) -> ShardedPollers | None:
        """The stream's units of work (shards, partitions), each read as a restriction of its own
        on portable runners; None (the default) reads the whole stream as one."""
        return None

    def streaming_read(self, read_trace: str | None = None, pacing: ReadPacing = ReadPacing()) -> beam.PTransform:
        """The unbounded read: beam-rtbf's own reader over ``poller()`` (split per ``shards()``
        on portable runners) unless a source overrides it; ``read_trace``, ``pacing``: see
        ``ReadFromPoller``."""
        return ReadFromPoller(self.poller, pacing, shards=self.shards(), read_trace=read_trace)

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
