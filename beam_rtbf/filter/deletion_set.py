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

__all__ = ["DeletionSet", "hash_ids"]

_PRIME = np.uint64(0x100000001B3)
_POWERS = np.ones(1, dtype=np.uint64)


def _powers(n: int) -> np.ndarray:
    """``_PRIME ** k mod 2**64`` for k < n, grown on demand and cached."""
    global _POWERS
    if len(_POWERS) < n:
        size = max(n, 2 * len(_POWERS), 64)
        powers = np.empty(size, dtype=np.uint64)
        powers[0] = 1
        with np.errstate(over="ignore"):
            for k in range(1, size):
                powers[k] = powers[k - 1] * _PRIME
        _POWERS = powers
    return _POWERS


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads polynomial hashes over all 64 bits."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(30))
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(27))
        h = h * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def hash_ids(ids: pa.Array | pa.ChunkedArray | Iterable[str]) -> np.ndarray:
    """64-bit hashes of strings, vectorised over the Arrow buffers (nulls hash as "")."""
    if isinstance(ids, pa.ChunkedArray):
        parts = [hash_ids(chunk) for chunk in ids.chunks]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)
    if not isinstance(ids, pa.Array):
        ids = pa.array(list(ids), type=pa.string())
    if ids.type == pa.large_string():
        ids = ids.cast(pa.string())
    elif ids.type != pa.string():
        ids = ids.cast(pa.string())
    n = len(ids)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    _, offsets_buf, data_buf = ids.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1, offset=ids.offset * 4)
    start, end = int(offsets[0]), int(offsets[-1])
    lengths = np.diff(offsets).astype(np.int64)
    if data_buf is None or end == start:
        raw = np.empty(0, dtype=np.uint8)
    else:
        raw = np.frombuffer(data_buf, dtype=np.uint8, count=end - start, offset=start)
    if ids.null_count:
        lengths = np.where(ids.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    total = int(raw.size)
    with np.errstate(over="ignore"):
        if total:
            rel_end = (offsets[1:] - start).astype(np.int64)
            row_of_byte = np.repeat(np.arange(n), np.diff(offsets))
            from_end = rel_end[row_of_byte] - 1 - np.arange(total)
            terms = raw.astype(np.uint64) * _powers(int(lengths.max()) + 1)[from_end]
            # reduceat needs in-range starts; a trailing zero term absorbs empty rows.
            terms = np.append(terms, np.uint64(0))
            starts = (offsets[:-1] - start).astype(np.int64)
            sums = np.add.reduceat(terms, starts)
            sums[lengths == 0] = 0
        else:
            sums = np.zeros(n, dtype=np.uint64)
        return _mix(sums + lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))


class DeletionSet:
    """An immutable-by-convention set of forgotten subject ids, as sorted hashes plus a version."""

    __slots__ = ("_hashes", "version")

    def __init__(self, hashes: np.ndarray | None = None, version: int = 0) -> None:
        self._hashes = np.unique(hashes) if hashes is not None else np.empty(0, dtype=np.uint64)
        self.version = version

    @classmethod
    def of(cls, subject_ids: Iterable[str], version: int = 0) -> "DeletionSet":
        return cls(hash_ids(list(subject_ids)), version)

    def __len__(self) -> int:
        return int(self._hashes.size)

    @property
    def nbytes(self) -> int:
        return int(self._hashes.nbytes)

    def with_ids(self, subject_ids: Iterable[str], version: int | None = None) -> "DeletionSet":
        """A new set with more ids (an incremental delta, never a full rebuild from the store)."""
        added = hash_ids(list(subject_ids))
        merged = DeletionSet.__new__(DeletionSet)
        merged._hashes = np.union1d(self._hashes, added) if added.size else self._hashes
        merged.version = self.version if version is None else max(self.version, version)
        return merged

    def union(self, other: "DeletionSet") -> "DeletionSet":
        merged = DeletionSet.__new__(DeletionSet)
        merged._hashes = np.union1d(self._hashes, other._hashes)
        merged.version = max(self.version, other.version)
        return merged

    def contains_hashes(self, hashes: np.ndarray) -> np.ndarray:
        if self._hashes.size == 0 or hashes.size == 0:
            return np.zeros(hashes.size, dtype=bool)
        idx = np.searchsorted(self._hashes, hashes)
        idx[idx == self._hashes.size] = 0
        return self._hashes[idx] == hashes

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
