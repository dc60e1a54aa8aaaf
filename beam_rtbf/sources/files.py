"""File sources: bounded replay of JSON-lines, CSV or TSV files, local or in an object store.

    file:///data/sessions/*.jsonl
    file:///data/train_sessions.csv              (Airbnb layout, header optional)
    file:///data/events/*.gz?format=jsonl        (compression from the extension)
    s3://bucket/sessions/2026-10-*.jsonl.gz      (Beam's S3 filesystem: --s3_* options)
    gs://bucket/sessions/*.jsonl                 (Beam's GCS filesystem)

Files are read in chunks of about ``chunk_bytes`` cut at line ends, so one
large file still spreads over all workers after the reshuffle.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_rtbf.records import RawBatch, now_ms
from beam_rtbf.sources.base import Source
from beam_rtbf.sources.spec import SourceSpec

__all__ = ["FileSource", "ReadFileChunks", "format_for_path"]

DEFAULT_CHUNK_BYTES = 16 << 20
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


def _compressed(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


def split_ranges(path: str, size: int, chunk_bytes: int) -> list[tuple[str, int, int]]:
    """Byte ranges of about ``chunk_bytes``; a compressed file is one range (it cannot seek)."""
    if _compressed(path) or size <= chunk_bytes:
        return [(path, 0, -1)]
    return [(path, start, min(start + chunk_bytes, size)) for start in range(0, size, chunk_bytes)]


def read_range(path: str, fmt: str, start: int, end: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[RawBatch]:
    """The lines that *start* in ``[start, end)`` (``end=-1``: to the end of the file), as chunks.

    As in Beam's text source, a line belongs to the range its first byte is in,
    so adjacent ranges read every line exactly once.
    """
    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
        offset = start
        if start > 0:
            handle.seek(start - 1)
            if handle.read(1) != b"\n":
                skipped = _read_to_newline(handle)
                offset = start + len(skipped)
        carry = b""
        while end < 0 or offset + len(carry) < end:
            want = chunk_bytes if end < 0 else min(chunk_bytes, end - offset - len(carry))
            block = handle.read(want)
            if not block:
                break
            data = carry + block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            yield RawBatch(path, fmt, data[: cut + 1], offset, None, now_ms(), has_header=offset == 0)
            offset += cut + 1
            carry = data[cut + 1 :]
        if carry:
            # The last line starting inside the range may end beyond it.
            tail = carry + (_read_to_newline(handle) if end >= 0 else b"")
            yield RawBatch(path, fmt, tail, offset, None, now_ms(), has_header=offset == 0)


def _read_to_newline(handle) -> bytes:
    parts = []
    while True:
        block = handle.read(65536)
        if not block:
            break
        cut = block.find(b"\n")
        if cut >= 0:
            parts.append(block[: cut + 1])
            handle.seek(handle.tell() - (len(block) - cut - 1))
            break
        parts.append(block)
    return b"".join(parts)


def read_chunks(path: str, fmt: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[RawBatch]:
    """A whole file as chunks of whole lines."""
    yield from read_range(path, fmt, 0, -1, chunk_bytes)


class _SplitFile(beam.DoFn):
    def __init__(self, chunk_bytes: int) -> None:
        self._chunk_bytes = chunk_bytes

    def process(self, metadata) -> Iterator[tuple[str, int, int]]:
        yield from split_ranges(metadata.path, metadata.size_in_bytes, self._chunk_bytes)


class _ReadRange(beam.DoFn):
    def __init__(self, fmt: str | None, chunk_bytes: int) -> None:
        self._fmt = fmt
        self._chunk_bytes = chunk_bytes

    def process(self, file_range: tuple[str, int, int]) -> Iterator[RawBatch]:
        path, start, end = file_range
        yield from read_range(path, format_for_path(path, self._fmt), start, end, self._chunk_bytes)


class ReadFileChunks(beam.PTransform):
    """Match a glob (failing if nothing matches), split files into byte ranges, read whole lines.

    Only the small (path, start, end) ranges are reshuffled, never the data, so a
    single large file spreads over every worker without a shuffle of its bytes.
    """

    def __init__(self, pattern: str, fmt: str | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        super().__init__()
        self._pattern = pattern
        self._fmt = fmt
        self._chunk_bytes = chunk_bytes

    def expand(self, pbegin):
        return (
            pbegin
            | "MatchFiles"
            >> fileio.MatchFiles(self._pattern, empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
            | "SplitIntoRanges" >> beam.ParDo(_SplitFile(self._chunk_bytes))
            | "SpreadRanges" >> beam.Reshuffle()
            | "ReadRanges" >> beam.ParDo(_ReadRange(self._fmt, self._chunk_bytes))
        )


class FileSource(Source):
    scheme = "file"

    def __init__(self, spec: SourceSpec, stream: str) -> None:
        super().__init__(spec, stream)
        # file:// names a local path; any other scheme is a Beam filesystem's and stays in the glob.
        self.pattern = spec.location if spec.scheme == "file" else f"{spec.scheme}://{spec.location}"
        if not spec.location:
            raise ValueError(f"source {spec.uri!r} has no path: use file:///abs/path/*.jsonl or s3://bucket/key*.jsonl")
        self.fmt = spec.get_str("format")
        if self.fmt:
            format_for_path(self.pattern, self.fmt)
        self.chunk_bytes = spec.get_int("chunk_bytes", DEFAULT_CHUNK_BYTES)

    @property
    def bounded(self) -> bool:
        return True

    def check(self) -> None:
        """An empty glob or an unreadable store: one clear error before the run, not a worker traceback."""
        try:
            matched = FileSystems.match([self.pattern])[0].metadata_list
        except Exception as exc:  # BeamIOError: no such bucket, no credentials, endpoint unreachable
            raise ValueError(f"source {self.spec.uri!r}: cannot list {self.pattern}: {exc}") from exc
        if not matched:
            raise ValueError(f"source {self.spec.uri!r}: no file matches {self.pattern}")

    def identity(self) -> dict[str, Any]:
        """The URI and every matched file's path, size and modification time."""
        matched = FileSystems.match([self.pattern])[0].metadata_list
        files = sorted([m.path, m.size_in_bytes, m.last_updated_in_seconds] for m in matched)
        return {**super().identity(), "files": files}

    def read(self) -> beam.PTransform:
        return ReadFileChunks(self.pattern, self.fmt, self.chunk_bytes)
