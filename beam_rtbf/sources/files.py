"""File sources: bounded replay of JSON-lines, CSV or TSV files, local or in an object store.

    file:///data/sessions/*.jsonl
    file:///data/train_sessions.csv              (Airbnb layout, header optional)
    file:///data/events/*.gz?format=jsonl        (compression from the extension)
    s3://bucket/sessions/2026-10-*.jsonl.gz      (Beam's S3 filesystem: --s3_* options)
    gs://bucket/sessions/*.jsonl                 (Beam's GCS filesystem)

Files are read in chunks of about ``chunk_bytes`` cut at line ends, so one
large file still spreads over all workers after the reshuffle.

CSV/TSV columns are mapped by the header's names when the file's first line is
a header (only known column names, ``user_id`` among them, in any order; see
``records.csv_header``); otherwise the Airbnb layout is assumed and the first
line is data. Every range of a file is given the file's header columns.

A compressed file (gzip, bzip2, deflate, lzma, zstd) is decompressed here, not
by Beam's ``CompressedFile``, which ends a truncated file early without an error.
When the compressed stream ends before its end-of-stream marker, or its data is
corrupt, the lines decompressed before that point are parsed as usual, and what
follows becomes one dead letter: the cut-off last line as raw bytes, position
``path@offset``, reason ``truncated compressed file: PATH ends at decompressed
offset N`` (or ``corrupt compressed file: ...``). The lines lost after the cut
cannot be counted; the dead letter says where the file stopped making sense.
"""

from __future__ import annotations

import bz2
import lzma
import os
import zlib
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_rtbf.records import RawBatch, csv_header, now_ms
from beam_rtbf.sources.base import Source
from beam_rtbf.sources.spec import SourceSpec

__all__ = ["FileSource", "ReadFileChunks", "format_for_path"]

DEFAULT_CHUNK_BYTES = 16 << 20
_RAW_READ_BYTES = 256 << 10
_HEADER_PROBE_BYTES = 64 << 10
_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".txt": "tsv"}


def format_for_path(path: str, explicit: str | None = None) -> str:
    if explicit:
        if explicit not in ("jsonl", "csv", "tsv"):
            raise ValueError(f"unknown format {explicit!r}: use jsonl, csv or tsv")
        return explicit
    base = path
    for ext in (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".xz", ".lzma"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    fmt = _FORMATS.get(os.path.splitext(base)[1].lower())
    if fmt is None:
        raise ValueError(f"cannot tell the format of {path!r}: add ?format=jsonl|csv|tsv to the URI")
    return fmt


def _compressed(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


class CompressedInputError(Exception):
    """A compressed file ends early or holds corrupt data; the message is the dead letter's reason."""


def _decompressor(kind: str):
    if kind == CompressionTypes.GZIP:
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if kind == CompressionTypes.DEFLATE:
        return zlib.decompressobj()
    if kind == CompressionTypes.BZIP2:
        return bz2.BZ2Decompressor()
    if kind == CompressionTypes.LZMA:
        return lzma.LZMADecompressor()
    if kind == CompressionTypes.ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor(max_window_size=2**31).decompressobj()
    raise ValueError(f"unsupported compression {kind!r}")


class CheckedDecompressor:
    """``read(n)`` over a compressed byte stream that notices a premature end.

    Concatenated members (gzip, bzip2) are read one after the other, as Beam does.
    Data decompressed before a problem is returned first; the next ``read``
    raises ``CompressedInputError``.
    """

    def __init__(self, raw, kind: str, path: str) -> None:
        self._raw = raw
        self._kind = kind
        self._path = path
        self._decompressor = _decompressor(kind)
        self._buffer = bytearray()
        self._offset = 0  # decompressed bytes handed out
        self._error: str | None = None
        self._eof = False

    def _fill(self, n: int) -> None:
        while len(self._buffer) < n and not self._eof and self._error is None:
            if self._decompressor.eof:
                pending = self._decompressor.unused_data or self._raw.read(_RAW_READ_BYTES)
                if not pending:
                    self._eof = True  # a clean end, after a whole member
                    return
                self._decompressor = _decompressor(self._kind)
            else:
                pending = self._raw.read(_RAW_READ_BYTES)
                if not pending:
                    at = self._offset + len(self._buffer)
                    self._error = f"truncated compressed file: {self._path} ends at decompressed offset {at}"
                    return
            try:
                self._buffer += self._decompressor.decompress(pending)
            except Exception as exc:  # zlib.error, OSError (bz2), LZMAError, ZstdError: the data is bad
                at = self._offset + len(self._buffer)
                self._error = f"corrupt compressed file: {self._path} at decompressed offset {at}: {exc}"

    def read(self, n: int) -> bytes:
        self._fill(n)
        if not self._buffer and self._error is not None:
            raise CompressedInputError(self._error)
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        self._offset += len(out)
        return out

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> CheckedDecompressor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_checked(path: str):
    """The file's bytes, decompressed through ``CheckedDecompressor`` when the name says compressed."""
    kind = CompressionTypes.detect_compression_type(path)
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    if kind == CompressionTypes.UNCOMPRESSED:
        return raw
    return CheckedDecompressor(raw, kind, path)


def file_columns(path: str, fmt: str) -> tuple[str, ...] | None:
    """The CSV/TSV header columns of the file at ``path``, or ``None`` (no header, or JSON lines)."""
    if fmt == "jsonl":
        return None
    try:
        with open_checked(path) as handle:
            head = handle.read(_HEADER_PROBE_BYTES)
    except CompressedInputError:
        return None
    return csv_header(head.split(b"\n", 1)[0], "\t" if fmt == "tsv" else ",")


def split_ranges(path: str, size: int, chunk_bytes: int) -> list[tuple[str, int, int]]:
    """Byte ranges of about ``chunk_bytes``; a compressed file is one range (it cannot seek)."""
    if _compressed(path) or size <= chunk_bytes:
        return [(path, 0, -1)]
    return [(path, start, min(start + chunk_bytes, size)) for start in range(0, size, chunk_bytes)]


def read_range(path: str, fmt: str, start: int, end: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[RawBatch]:
    """The lines that *start* in ``[start, end)`` (``end=-1``: to the end of the file), as chunks.

    As in Beam's text source, a line belongs to the range its first byte is in,
    so adjacent ranges read every line exactly once. A compressed file that ends
    early or is corrupt ends with one ``RawBatch`` carrying ``error`` (see the
    module docstring).
    """
    columns = file_columns(path, fmt)
    with open_checked(path) as handle:
        offset = start
        if start > 0:
            handle.seek(start - 1)
            if handle.read(1) != b"\n":
                skipped = _read_to_newline(handle)
                offset = start + len(skipped)
        carry = b""
        while end < 0 or offset + len(carry) < end:
            want = chunk_bytes if end < 0 else min(chunk_bytes, end - offset - len(carry))
            try:
                block = handle.read(want)
            except CompressedInputError as exc:
                yield RawBatch(path, fmt, carry, offset, None, now_ms(), columns=columns, error=str(exc))
                return
            if not block:
                break
            data = carry + block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            yield RawBatch(path, fmt, data[: cut + 1], offset, None, now_ms(), offset == 0, columns)
            offset += cut + 1
            carry = data[cut + 1 :]
        if carry:
            # The last line starting inside the range may end beyond it.
            tail = carry + (_read_to_newline(handle) if end >= 0 else b"")
            yield RawBatch(path, fmt, tail, offset, None, now_ms(), offset == 0, columns)


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
    PARAMS = ("format", "chunk_bytes")

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
