"""Atomic file writes on any Beam filesystem.

Readers never see a half-written file: it either does not exist yet or is complete.
On filesystems with an atomic rename (local, HDFS) that takes a temporary name and a
rename. On object stores (s3://, gs://, ...) a PUT is already atomic and a "rename" is
a copy plus a delete, which in a versioned bucket would leave the data behind in the
temporary key's old versions: there the object is written in place.

Permissions: outputs hold raw ids (archive, manifests, dead letters, the embedded
registry, receipts), so the commands write them owner-only by default
(``--output_mode=owner``: directories 0700, files 0600) by setting the process
umask before anything is written (``output_mode``); ``group`` adds group read
(0750/0640), ``world`` is the usual 0755/0644. Object stores have no POSIX modes:
use bucket policies there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import IO

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_rtbf.records import DeadLetter
from beam_rtbf.sinks.stable import GatherForWrite, StableParDo

__all__ = [
    "write_atomically",
    "write_bytes_atomically",
    "join",
    "unique_part",
    "safe_file_name",
    "staging_dir",
    "run_write_dir",
    "STAGING_DIR",
    "is_object_store",
    "WriteDeadLetters",
    "OUTPUT_MODES",
    "OUTPUT_MODE_HELP",
    "output_mode",
]

# --output_mode -> the process umask while a command writes.
OUTPUT_MODES = {"owner": 0o077, "group": 0o027, "world": 0o022}
OUTPUT_MODE_HELP = (
    "Permissions of local outputs (they hold raw ids): owner = directories 0700, files 0600 (default); "
    "group = 0750/0640; world = 0755/0644"
)


@contextlib.contextmanager
def output_mode(mode: str) -> Iterator[None]:
    """Files and directories created meanwhile (by any thread of this process) get ``mode``'s permissions."""
    if mode not in OUTPUT_MODES:
        raise ValueError(f"--output_mode must be one of {', '.join(OUTPUT_MODES)}, not {mode!r}")
    previous = os.umask(OUTPUT_MODES[mode])
    try:
        yield
    finally:
        os.umask(previous)


_RENAMING_SCHEMES = frozenset({"", "file", "hdfs"})


def join(base: str, *parts: str) -> str:
    if "://" not in base:  # a local path: what FileSystems.join does for it, without resolving a file system
        return os.path.join(base, *parts)
    return FileSystems.join(base, *parts)


def unique_part(prefix: str = "part", suffix: str = "") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}{suffix}"


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_file_name(key: str, suffix: str = ".json", readable_chars: int = 48) -> str:
    """A file name for an external key (a request id): never a path, never hidden, always unique.

    ``<readable prefix>-<sha256 prefix><suffix>``: the prefix keeps ``[A-Za-z0-9_-]`` of the key
    (others become ``_``) so operators can still recognise it; the hash makes names of different
    keys differ and bounds the length, so ``../x``, ``/etc/x``, ``a/b`` or ``.tmp-x`` are just names.
    """
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    readable = _UNSAFE.sub("_", key)[:readable_chars].strip("_") or "id"
    return f"{readable}-{digest}{suffix}"


STAGING_DIR = "_staging"


def staging_dir(root: str, run_id: str) -> str:
    """Where bounded run ``run_id`` writes what it publishes under ``root`` when it commits (``sinks/ledger.py``)."""
    return join(root, STAGING_DIR, run_id)


def run_write_dir(root: str, run_id: str | None) -> str:
    """Where a writer of ``root`` puts its files: a bounded run's staging folder where a rename is atomic;
    in place without a run, and on object stores (a PUT is atomic there, a rename is a copy that would
    leave the data in the staging key's old versions; the ledger removes a dead run's files by name)."""
    if run_id and not is_object_store(root):
        return staging_dir(root, run_id)
    return root


def _ensure_dir(path: str) -> None:
    directory = path.rsplit("/", 1)[0]
    if directory and not FileSystems.exists(directory):
        try:
            FileSystems.mkdirs(directory)
        except OSError:
            pass  # created concurrently, or an object store without directories


def is_object_store(path: str) -> bool:
    """True where a write is atomic by itself and a rename is a copy (s3://, gs://, ...)."""
    return (FileSystems.get_scheme(path) or "") not in _RENAMING_SCHEMES


def write_atomically(
    path: str, write: Callable[[IO[bytes]], None], verify_tmp: Callable[[str], None] | None = None
) -> str:
    """Write through ``write(handle)`` so that ``path`` is either absent/old or complete, never partial.

    ``verify_tmp(tmp_path)`` may check the temporary file before it replaces ``path``; if it
    raises, the temporary file is deleted and ``path`` is untouched. Object stores have no
    temporary file: check the content before calling.
    """
    if is_object_store(path):
        with FileSystems.create(path) as handle:
            write(handle)
        return path
    _ensure_dir(path)
    directory, name = path.rsplit("/", 1)
    tmp = f"{directory}/.tmp-{uuid.uuid4().hex[:12]}-{name}"
    with FileSystems.create(tmp) as handle:
        write(handle)
    if verify_tmp is not None:
        try:
            verify_tmp(tmp)
        except Exception:
            FileSystems.delete([tmp])
            raise
    FileSystems.rename([tmp], [path])
    return path


def write_bytes_atomically(path: str, data: bytes, verify_tmp: Callable[[str], None] | None = None) -> str:
    return write_atomically(path, lambda handle: handle.write(data), verify_tmp)


def json_lines(rows: Iterable[dict]) -> bytes:
    return b"".join(json.dumps(row, sort_keys=True).encode() + b"\n" for row in rows)


class _WriteDeadLettersFn(beam.DoFn):
    """Buffer a bundle's dead letters and write them as one JSON-lines file."""

    def __init__(self, directory: str, run_id: str | None = None) -> None:
        self._directory = directory
        self._write_dir = run_write_dir(directory, run_id)
        self._prefix = f"deadletter-{run_id}" if run_id else "deadletter"

    def start_bundle(self) -> None:
        self._buffer: list[DeadLetter] = []

    def process(self, letter: DeadLetter) -> None:
        self._buffer.append(letter)
        if len(self._buffer) >= 10_000:
            self._flush()

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        data = b"".join(letter.to_json().encode() + b"\n" for letter in self._buffer)
        write_bytes_atomically(join(self._write_dir, unique_part(self._prefix, ".jsonl")), data)
        self._buffer = []


class _WriteGatheredDeadLettersFn(beam.DoFn):
    """One file per gathered element, named by its content (``sinks/stable.py``): a replay rewrites it."""

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def process(self, element: tuple[int, list[DeadLetter]]) -> None:
        _, letters = element
        data = b"".join(letter.to_json().encode() + b"\n" for letter in letters)
        if not data:  # a processing-time pane can fire with nothing new in it
            return
        name = f"deadletter-{hashlib.sha256(data).hexdigest()[:32]}.jsonl"
        write_bytes_atomically(join(self._directory, name), data)


def _one_key(letter: DeadLetter) -> Iterator[tuple[int, DeadLetter]]:
    yield 0, letter  # dead letters are few: one writer


class WriteDeadLetters(beam.PTransform):
    """DeadLetter records -> ``DIR/deadletter/*.jsonl`` (raw bytes, position, reason); staged under ``run_id``;
    written once per checkpoint under content names with ``exactly_once``."""

    def __init__(self, directory: str, run_id: str | None = None, exactly_once: bool = False) -> None:
        super().__init__()
        self._directory = directory
        self._run_id = run_id
        self._exactly_once = exactly_once

    def expand(self, letters):
        if self._exactly_once:
            return (
                letters
                | "GatherDeadLetters" >> GatherForWrite(_one_key)
                | "WriteDeadLetterFiles" >> StableParDo(_WriteGatheredDeadLettersFn(self._directory))
            )
        return letters | "WriteDeadLetterFiles" >> beam.ParDo(_WriteDeadLettersFn(self._directory, self._run_id))
