"""``file://GLOB`` sources: bounded replay of JSON-lines, CSV or TSV files on any Beam filesystem.

    file:///data/sessions/*.jsonl
    file:///data/train_sessions.csv              (Airbnb layout, header optional)
    file:///data/events/*.gz?format=jsonl        (compression from the extension)

Files are read in chunks of about ``chunk_bytes`` cut at line ends, so one
large file still spreads over all workers after the reshuffle.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_rtbf.records import RawBatch, now_ms
from beam_rtbf.sources.base import Source
from beam_rtbf.sources.spec import SourceSpec

__all__ = ["FileSource", "ReadFileChunks", "format_for_path"]

DEFAULT_CHUNK_BYTES = 8 << 20
_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".txt": "tsv"}


def format_for_path(path: str, explicit: str | None = None) -> str:
    if explicit:
        if explicit not in ("jsonl", "csv", "tsv"):
            raise ValueError(f"unknown format {explicit!r}: use jsonl, csv or tsv")
        return explicit
    base = path
    for ext in (".gz", ".bz2", ".zst", ".deflate"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    fmt = _FORMATS.get(os.path.splitext(base)[1].lower())
    if fmt is None:
        raise ValueError(f"cannot tell the format of {path!r}: add ?format=jsonl|csv|tsv to the URI")
    return fmt


def read_chunks(path: str, fmt: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[RawBatch]:
    """Chunks of whole lines; the first chunk of a CSV/TSV file may carry the header."""
    offset = 0
    carry = b""
    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
        while True:
            block = handle.read(chunk_bytes)
            if not block:
                break
            data = carry + block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            chunk, carry = data[: cut + 1], data[cut + 1 :]
            yield RawBatch(path, fmt, chunk, offset, None, now_ms(), has_header=offset == 0)
            offset += len(chunk)
    if carry:
        yield RawBatch(path, fmt, carry, offset, None, now_ms(), has_header=offset == 0)


class _ReadChunks(beam.DoFn):
    def __init__(self, fmt: str | None, chunk_bytes: int) -> None:
        self._fmt = fmt
        self._chunk_bytes = chunk_bytes

    def process(self, metadata) -> Iterator[RawBatch]:
        path = metadata.path
        yield from read_chunks(path, format_for_path(path, self._fmt), self._chunk_bytes)


class ReadFileChunks(beam.PTransform):
    """Match a glob (failing if nothing matches) and read its files as chunks of whole lines."""

    def __init__(self, pattern: str, fmt: str | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        super().__init__()
        self._pattern = pattern
        self._fmt = fmt
        self._chunk_bytes = chunk_bytes

    def expand(self, pbegin):
        return (
            pbegin
            | "MatchFiles" >> fileio.MatchFiles(self._pattern, empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadChunks" >> beam.ParDo(_ReadChunks(self._fmt, self._chunk_bytes))
            | "SpreadChunks" >> beam.Reshuffle()
        )


class FileSource(Source):
    scheme = "file"

    def __init__(self, spec: SourceSpec, stream: str) -> None:
        super().__init__(spec, stream)
        self.pattern = spec.location
        if not self.pattern:
            raise ValueError(f"source {spec.uri!r} has no path: use file:///abs/path/*.jsonl")
        self.fmt = spec.get_str("format")
        if self.fmt:
            format_for_path(self.pattern, self.fmt)
        self.chunk_bytes = spec.get_int("chunk_bytes", DEFAULT_CHUNK_BYTES)

    @property
    def bounded(self) -> bool:
        return True

    def read(self) -> beam.PTransform:
        return ReadFileChunks(self.pattern, self.fmt, self.chunk_bytes)
