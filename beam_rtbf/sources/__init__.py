"""Sources by URI scheme: ``source_for("file:///x/*.jsonl", "sessions")``.

A later connector only adds a scheme to ``SOURCES``; tests may swap entries.
"""

from __future__ import annotations

from beam_rtbf.sources.base import Poller, PollResult, Source
from beam_rtbf.sources.files import FileSource
from beam_rtbf.sources.kafka import KafkaSource
from beam_rtbf.sources.kinesis import KinesisSource
from beam_rtbf.sources.pubsub import PubSubSource
from beam_rtbf.sources.spec import SourceSpec, parse_source_uri
from beam_rtbf.sources.synthetic import SyntheticSource

__all__ = ["SOURCES", "source_for", "Source", "Poller", "PollResult", "SourceSpec", "parse_source_uri"]

SOURCES: dict[str, type[Source]] = {
    "file": FileSource,
    "gs": FileSource,  # object-store globs: the same files, through Beam's filesystems
    "s3": FileSource,
    "kafka": KafkaSource,
    "kinesis": KinesisSource,
    "pubsub": PubSubSource,
    "synthetic": SyntheticSource,
}


def source_for(uri: str, stream: str) -> Source:
    """The configured source for ``uri``; ValueError naming the known schemes otherwise."""
    spec = parse_source_uri(uri)
    cls = SOURCES.get(spec.scheme)
    if cls is None:
        raise ValueError(f"no source for scheme {spec.scheme!r} in {uri!r}; known: {', '.join(sorted(SOURCES))}")
    return cls(spec, stream)
