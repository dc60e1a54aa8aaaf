"""Line-level helpers shared by the session and request parsers: bounds, positions, safe JSON.

Hostile JSON is stopped here, before anything recursive sees it: a record nested
deeper than ``MAX_NESTING_DEPTH`` arrays/objects is refused with a readable
reason (Python's ``json`` raises ``RecursionError`` from about 1,000 levels, and
pyarrow's native reader crashes the process from a few thousand), and a JSON
value that is not an object (``null``, a number, a list) is refused too.
``native_json_safe`` is the cheap byte-level pre-screen that decides which
lines the native reader may see at all.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from beam_rtbf.records import RawBatch

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "MAX_NESTING_DEPTH",
    "NESTING_TOO_DEEP",
    "NOT_AN_OBJECT",
    "line_bounds",
    "record_position",
    "json_depth",
    "load_json_object",
    "native_json_safe",
]

# A longer line is a dead letter ("oversize record"), in the session and the request parser alike.
DEFAULT_MAX_RECORD_BYTES = 64 * 1024
MAX_NESTING_DEPTH = 64
NESTING_TOO_DEEP = f"nesting too deep: more than {MAX_NESTING_DEPTH} levels of arrays/objects"
NOT_AN_OBJECT = "malformed record: JSON value is not an object"
_OPEN_BRACE, _OPEN_BRACKET, _CLOSE_BRACE, _CR = ord("{"), ord("["), ord("}"), ord("\r")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def line_bounds(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, without the newline) of every line in ``data``."""
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    ends = newlines
    if len(data) and data[-1:] != b"\n":
        ends = np.append(ends, len(data))
    starts = np.concatenate(([0], newlines + 1))[: len(ends)]
    return starts, ends


def record_position(raw: RawBatch, line_index: int, byte_start: int) -> str:
    """A stream source's own position for the line, else ``source@byte_offset``."""
    if raw.positions is not None:
        return raw.positions[line_index]
    return f"{raw.source}@{raw.first_offset + byte_start}"


def json_depth(line: bytes) -> int:
    """Deepest array/object nesting of one JSON text, brackets inside strings not counted."""
    stripped = _JSON_STRING.sub(b'""', line)
    buf = np.frombuffer(stripped, dtype=np.uint8)
    opens = (buf == _OPEN_BRACE) | (buf == _OPEN_BRACKET)
    closes = (buf == _CLOSE_BRACE) | (buf == ord("]"))
    if not opens.any():
        return 0
    return int(np.cumsum(opens.astype(np.int32) - closes.astype(np.int32)).max())


def load_json_object(line: bytes) -> dict[str, Any]:
    """One JSON-lines record as a dict; ``ValueError`` with a readable reason for anything else."""
    if line.count(b"[") + line.count(b"{") > MAX_NESTING_DEPTH and json_depth(line) > MAX_NESTING_DEPTH:
        raise ValueError(NESTING_TOO_DEEP)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"bad UTF-8 at byte {exc.start}") from exc
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc.msg} at column {exc.colno}") from exc
    except RecursionError as exc:  # belt and braces: the depth check above should have caught it
        raise ValueError(NESTING_TOO_DEEP) from exc
    if not isinstance(obj, dict):
        raise ValueError(NOT_AN_OBJECT)
    return obj


def native_json_safe(data: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Which lines pyarrow's JSON reader may parse: ``{...}`` lines with few brackets.

    The native reader crashes the process (not an exception) on a block that
    starts with a bare ``null`` and on nesting of a few thousand levels, so only
    lines that start with ``{``, end with ``}`` (before an optional CR) and hold
    at most ``MAX_NESTING_DEPTH`` opening brackets reach it; the rest go to the
    per-line parser, which refuses them with a reason. On clean flat data the
    bracket check is one vectorised count of ``{`` for the whole chunk (about
    2% of the native parse), and per-line counts only when the chunk has nesting.
    """
    n = len(starts)
    safe = ends > starts
    if not n:
        return safe
    buf = np.frombuffer(data, dtype=np.uint8)
    idx = np.flatnonzero(safe)
    first = buf[starts[idx]]
    last_at = ends[idx] - 1
    last_at = np.where((buf[last_at] == _CR) & (last_at > starts[idx]), last_at - 1, last_at)
    safe[idx] = (first == _OPEN_BRACE) & (buf[last_at] == _CLOSE_BRACE)
    lines = int(safe.sum())
    # Each safe line has at least one '{': no line can hold more than the surplus plus one.
    # (numpy's compare-and-count is faster than bytes.count; find is memchr.)
    opens = int(np.count_nonzero(buf == _OPEN_BRACE))
    if data.find(b"[") >= 0:
        opens += int(np.count_nonzero(buf == _OPEN_BRACKET))
    if opens - lines < MAX_NESTING_DEPTH:
        return safe
    brackets = (buf == _OPEN_BRACE) | (buf == _OPEN_BRACKET)
    per_line = np.add.reduceat(brackets, starts, dtype=np.int64)
    return safe & (per_line <= MAX_NESTING_DEPTH)
