"""The one canonical form of a subject identifier, used by the filter, the index and the purge.

An identifier (user id, e-mail, device id, request subject) is compared only in
this form, so a subject cannot slip past the filter or the purge by case,
padding or Unicode spelling:

1. zero-width characters (U+200B..U+200D, U+2060, U+FEFF, U+00AD soft hyphen)
   are removed: they are invisible, and an id that differs only by them is the
   same id to a person reading it;
2. Unicode NFC normalisation (``é`` as one code point or as ``e`` + accent);
3. surrounding whitespace trimmed (Python's ``str.strip``);
4. e-mail addresses (anything containing ``@``) case-folded (``str.casefold``);
   other ids keep their case: user and device ids are case-sensitive keys.

``canonical_id`` is the definition. ``canonical_array`` is its vectorised
twin for Arrow columns: it finds the few values that may change with Arrow
kernels and runs ``canonical_id`` on those only, so the result is identical
and the hot path stays vectorised (clean ASCII ids cost a few kernel passes).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["canonical_id", "canonical_ids", "canonical_array", "ZERO_WIDTH", "CANONICAL_FORM"]

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
# Names these rules (bump the number when they change) and the Unicode data NFC uses: stored
# identifier filters (archive/idfilter.py) built under another form are not trusted.
CANONICAL_FORM = f"rtbf-1/unicode-{unicodedata.unidata_version}"
_ZERO_WIDTH_RE = re.compile(f"[{ZERO_WIDTH}]")


def canonical_id(value: str) -> str:
    """The canonical form of one identifier (see the module docstring)."""
    text = unicodedata.normalize("NFC", _ZERO_WIDTH_RE.sub("", value)).strip()
    return text.casefold() if "@" in text else text


def canonical_ids(values: Iterable[str]) -> tuple[str, ...]:
    """Canonical forms, in order, without repeats and without empty ones."""
    return tuple(dict.fromkeys(c for c in (canonical_id(v) for v in values) if c))


_ASCII_SPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.strip removes from ASCII text


def _any_high_bit(data: np.ndarray) -> bool:
    """Whether any byte is >= 0x80, eight bytes at a time."""
    whole = data.size - data.size % 8
    if whole and (data[:whole].view(np.uint64) & np.uint64(0x8080808080808080)).any():
        return True
    return bool((data[whole:] >= 0x80).any())


def _rows_to_fix(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(non-ASCII rows, ASCII rows that may change), from the raw UTF-8 bytes with numpy.

    An ASCII value may change if it starts or ends with a control or space byte, or holds
    both ``@`` and an upper-case letter. Nulls are in neither set.
    """
    n = len(values)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset : values.offset + n + 1]
    data_buffer = values.buffers()[2]
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data_buffer, dtype=np.uint8)[lo:hi] if data_buffer is not None else np.zeros(0, np.uint8)
    starts, ends = offsets[:-1] - lo, offsets[1:] - lo

    def rows_of(positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(ends, positions, side="right")

    non_ascii = np.zeros(n, dtype=bool)
    if _any_high_bit(data):
        non_ascii[rows_of(np.flatnonzero(data >= 0x80))] = True
    nonempty = ends > starts
    suspect = np.zeros(n, dtype=bool)
    if data.size:
        first = data[np.minimum(starts, data.size - 1)]
        last = data[np.maximum(ends - 1, 0)]
        edge = (first <= 0x20) | (first == 0x7F) | (last <= 0x20) | (last == 0x7F)
        suspect = nonempty & edge
    at = np.flatnonzero(data == 0x40)
    if at.size:
        upper = np.flatnonzero((data >= 0x41) & (data <= 0x5A))
        if upper.size:
            has_upper = np.zeros(n, dtype=bool)
            has_upper[rows_of(upper)] = True
            has_at = np.zeros(n, dtype=bool)
            has_at[rows_of(at)] = True
            suspect |= has_upper & has_at
    suspect &= ~non_ascii
    if values.null_count:
        valid = values.is_valid().to_numpy(zero_copy_only=False)
        non_ascii &= valid
        suspect &= valid
    return np.flatnonzero(non_ascii), np.flatnonzero(suspect)


def canonical_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``canonical_id`` applied to every non-null value of a string column, vectorised.

    Non-ASCII values (rare) go through ``canonical_id`` itself; ASCII ones are fixed with
    Arrow kernels that do exactly what it does to ASCII text (strip, lower-case e-mails).
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if values.type != pa.string():
        values = values.cast(pa.string())
    if len(values) == 0 or values.null_count == len(values):
        return values
    non_ascii, ascii_rows = _rows_to_fix(values)
    if non_ascii.size == 0 and ascii_rows.size == 0:
        return values
    rows = np.concatenate([non_ascii, ascii_rows])
    fixed_python = pa.array([canonical_id(v) for v in values.take(pa.array(non_ascii)).to_pylist()], pa.string())
    trimmed = pc.utf8_trim(values.take(pa.array(ascii_rows)), characters=_ASCII_SPACE)
    fixed_ascii = pc.if_else(pc.match_substring(trimmed, "@"), pc.ascii_lower(trimmed), trimmed)
    replacements = pa.concat_arrays([fixed_python, fixed_ascii.cast(pa.string())])
    order = np.argsort(rows, kind="stable")
    mask = np.zeros(len(values), dtype=bool)
    mask[rows] = True
    return pc.replace_with_mask(values, pa.array(mask), replacements.take(pa.array(order)))
