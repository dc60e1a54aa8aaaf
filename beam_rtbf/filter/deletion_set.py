"""The deletion set as a sorted array of 64-bit hashes: compact and vectorised.

Membership of a whole Arrow column is one vectorised hash plus one
``searchsorted``: no Python object per record, no per-call hash-table build
(``pyarrow.compute.is_in`` rebuilds its table every call). 8 bytes per subject,
so 10 M subjects take 80 MB.

A 64-bit hash collision can only make a session *look* forgotten, never the
reverse: the set fails closed. The chance per lookup is ``len(set) / 2**64``
(about 5e-13 for 10 M subjects).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["DeletionSet", "hash_ids"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads bits over all 64."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(30))
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(27))
        h = h * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _padded_words(ids: pa.Array, lengths: np.ndarray, width: int) -> np.ndarray:
    """Each id's UTF-8 bytes, NUL-padded to ``width`` bytes, as an (n, width/8) uint64 matrix."""
    n = len(ids)
    if int(lengths.max(initial=0)) == int(lengths.min(initial=0)) or pc.all(pc.string_is_ascii(ids)).as_py():
        # ASCII: Arrow pads every string to the same byte width in one C kernel.
        padded = pc.utf8_rpad(ids, width, "\x00")
        _, offsets_buf, data_buf = padded.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1, offset=padded.offset * 4)
        if int(offsets[-1] - offsets[0]) == n * width:
            raw = np.frombuffer(data_buf, dtype=np.uint8, count=n * width, offset=int(offsets[0]))
            return raw.view(np.uint64).reshape(n, width // 8)
    # Any bytes: scatter them into a zeroed matrix.
    _, offsets_buf, data_buf = ids.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1, offset=ids.offset * 4).astype(np.int64)
    start, total = int(offsets[0]), int(offsets[-1] - offsets[0])
    matrix = np.zeros((n, width), dtype=np.uint8)
    if total:
        raw = np.frombuffer(data_buf, dtype=np.uint8, count=total, offset=start)
        row_of_byte = np.repeat(np.arange(n), lengths)
        column = np.arange(total) - np.repeat(offsets[:-1] - start, lengths)
        matrix[row_of_byte, column] = raw
    return matrix.view(np.uint64)


def hash_ids(ids: pa.Array | pa.ChunkedArray | Iterable[str]) -> np.ndarray:
    """64-bit hashes of strings, vectorised over Arrow buffers.

    The hash of a string depends only on its bytes: its length, then each
    8-byte word of its NUL-padded UTF-8 bytes folded through splitmix64. Nulls
    hash like the empty string (callers mask them out).
    """
    if isinstance(ids, pa.ChunkedArray):
        parts = [hash_ids(chunk) for chunk in ids.chunks]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)
    if not isinstance(ids, pa.Array):
        ids = pa.array(list(ids), type=pa.string())
    if ids.type != pa.string():
        ids = ids.cast(pa.string())
    if ids.null_count:
        ids = pc.fill_null(ids, "")
    n = len(ids)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    lengths = pc.binary_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    words_per_row = np.maximum(1, (lengths + 7) // 8)
    width = int(words_per_row.max()) * 8
    words = _padded_words(ids, lengths, width)
    with np.errstate(over="ignore"):
        h = _mix(lengths.astype(np.uint64) * _GOLDEN)
        for j in range(width // 8):
            mixed = _mix(h ^ words[:, j])
            h = mixed if j == 0 else np.where(j < words_per_row, mixed, h)
        return h


def _sorted_unique(hashes: np.ndarray) -> np.ndarray:
    """Sorted distinct values; numpy's stable sort is a radix sort for integers, O(n)."""
    if hashes.size == 0:
        return np.empty(0, dtype=np.uint64)
    ordered = np.sort(hashes.astype(np.uint64, copy=False), kind="stable")
    keep = np.empty(ordered.size, dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


class DeletionSet:
    """An immutable-by-convention set of forgotten subject ids, as sorted hashes plus a version."""

    __slots__ = ("_hashes", "version", "_bitmap", "_shift")

    def __init__(self, hashes: np.ndarray | None = None, version: int = 0) -> None:
        self._hashes = _sorted_unique(hashes) if hashes is not None else np.empty(0, dtype=np.uint64)
        self.version = version
        self._build_bitmap()

    def _build_bitmap(self) -> None:
        """One bit per 8-ish slots by top hash bits: most non-members are rejected by one gather,
        and only candidates (about 1 in 8) go on to the binary search."""
        bits = max(10, int(np.ceil(np.log2(max(1, self._hashes.size)))) + 3)
        self._shift = np.uint64(64 - bits)
        slots = np.zeros(1 << bits, dtype=bool)
        slots[(self._hashes >> self._shift).astype(np.int64)] = True
        self._bitmap = np.packbits(slots, bitorder="little")  # 1 bit per slot: ~1 byte per subject

    @classmethod
    def of(cls, subject_ids: Iterable[str], version: int = 0) -> DeletionSet:
        return cls(hash_ids(list(subject_ids)), version)

    def __len__(self) -> int:
        return int(self._hashes.size)

    @property
    def hashes(self) -> np.ndarray:
        """The sorted distinct hashes (read-only view)."""
        view = self._hashes.view()
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        """Memory of the set as held by a worker: the sorted hashes plus the prefilter."""
        return int(self._hashes.nbytes + self._bitmap.nbytes)

    def with_ids(self, subject_ids: Iterable[str], version: int | None = None) -> DeletionSet:
        """A new set with more ids (an incremental delta, never a full rebuild from the store)."""
        added = hash_ids(list(subject_ids))
        merged = DeletionSet.__new__(DeletionSet)
        merged._hashes = _sorted_unique(np.concatenate([self._hashes, added])) if added.size else self._hashes
        merged.version = self.version if version is None else max(self.version, version)
        merged._build_bitmap()
        return merged

    def union(self, other: DeletionSet) -> DeletionSet:
        merged = DeletionSet.__new__(DeletionSet)
        merged._hashes = _sorted_unique(np.concatenate([self._hashes, other._hashes]))
        merged.version = max(self.version, other.version)
        merged._build_bitmap()
        return merged

    def contains_hashes(self, hashes: np.ndarray) -> np.ndarray:
        result = np.zeros(hashes.size, dtype=bool)
        if self._hashes.size == 0 or hashes.size == 0:
            return result
        slot = (hashes >> self._shift).astype(np.int64)
        candidates = np.flatnonzero((self._bitmap[slot >> 3] >> (slot & 7).astype(np.uint8)) & 1)
        if candidates.size:
            probe = hashes[candidates]
            idx = np.searchsorted(self._hashes, probe)
            idx[idx == self._hashes.size] = 0
            result[candidates] = self._hashes[idx] == probe
        return result

    def contains(self, ids: pa.Array | pa.ChunkedArray | Iterable[str]) -> np.ndarray:
        """Boolean mask: which ids are forgotten (nulls never are)."""
        if not isinstance(ids, (pa.Array, pa.ChunkedArray)):
            ids = pa.array(list(ids), type=pa.string())
        mask = self.contains_hashes(hash_ids(ids))
        if ids.null_count:
            mask &= ~ids.is_null().to_numpy(zero_copy_only=False)
        return mask

    def __contains__(self, subject_id: str) -> bool:
        return bool(self.contains([subject_id])[0])

    def __getstate__(self):
        return (self._hashes, self.version)

    def __setstate__(self, state) -> None:
        self._hashes, self.version = state
        self._build_bitmap()
