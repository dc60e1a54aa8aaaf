"""Mergeable partial aggregates of the analytics metric, and their coder.

A partial holds, for the sessions it saw, two tables:

- ``cells``: per (window_start, action_type, device_type) the sessions, the sum and the count of
  ``secs_elapsed`` (these add up across partials) and the distinct users it saw;
- ``pairs``: its distinct (cell, user_id), so distinct users stay exact however the sessions were
  split: a user two partials saw counts once.

A window's only partial (a bounded run's bundle sends one per bucket) is its result as it is;
several are merged through their pairs. The partial is computed on integer codes (Arrow's
dictionary encoding of the keys and users, one hash pass each) instead of a group-by on four
columns with strings, and what crosses Beam's GroupByKey (on the FnApiRunner the bounded job's
only large shuffle) is a cell number and a user id per pair, written by ``PartialCoder`` as Arrow
IPC streams (read back without a copy) where Beam would pickle them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Partial", "PartialCoder", "partial_aggregates", "merge_partials", "KEYS"]

KEYS = ["window_start", "action_type", "device_type"]


class Partial(NamedTuple):
    """One piece of the metric (module docstring)."""

    cells: pa.Table  # window_start, action_type, device_type, sessions, secs_elapsed_sum/_count, users
    pairs: pa.Table  # cell (row of ``cells``), user_id


def _codes(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(int64 code per value, the distinct values in order of first appearance); null is a value."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):  # encoded again from its values: a dictionary may repeat one
        values = values.cast(values.type.value_type)
    encoded = pc.dictionary_encode(values, null_encoding="encode")
    return encoded.indices.to_numpy().astype(np.int64), encoded.dictionary


def _valid(values: pa.Array) -> np.ndarray:
    return pc.is_valid(values).to_numpy(zero_copy_only=False)


def _cells_of(window: np.ndarray, action: np.ndarray, device: np.ndarray, n_action: int, n_device: int):
    """(cell number per row, and per cell its window, action code, device code)."""
    span = int(window.max()) - int(window.min()) + 1
    if span * n_action * n_device < 1 << 62:
        low = int(window.min())
        key = ((window - low) * n_action + action) * n_device + device
        cell, keys = _codes(pa.array(key))
        keys = keys.to_numpy()
        return cell, (keys // (n_action * n_device)) + low, (keys // n_device) % n_action, keys % n_device
    # Too many windows x keys for one int64 (years of one-second windows, say): sort instead.
    unique, cell = np.unique(np.stack([window, action, device], axis=1), axis=0, return_inverse=True)
    return cell.reshape(-1).astype(np.int64), unique[:, 0], unique[:, 1], unique[:, 2]


def _distinct_pairs(keys: np.ndarray, user: np.ndarray, parts: int = 64) -> np.ndarray:
    """The distinct ``keys``, found per part of the users: a hash table of all of a bundle's pairs
    (millions) misses the cache on every probe and took 5-8x longer than 64 small ones."""
    part = (user % parts).astype(np.int16)
    order, bounds = _grouped(part, parts)
    keys = keys[order]
    return np.concatenate([pc.unique(pa.array(keys[bounds[i] : bounds[i + 1]])).to_numpy() for i in range(parts)])


def partial_aggregates(
    sessions: pa.RecordBatch | pa.Table, window_ms: int, bucket_ms: int
) -> Iterator[tuple[int, Partial]]:
    """(bucket_start_ms, partial of the sessions in it) for each bucket the sessions touch.

    A bucket is the Beam window the partial travels in: the analytics window itself when
    streaming, a coarser span (an hour) in bounded runs, so a day of one-minute windows costs 24
    elements instead of 1440.
    """
    if sessions.num_rows == 0:
        return
    window = np.asarray(sessions.column("event_time_ms").to_numpy()) // window_ms
    action, actions = _codes(sessions.column("action_type"))
    device, devices = _codes(sessions.column("device_type"))
    user, users = _codes(sessions.column("user_id"))
    cell, cell_window, cell_action, cell_device = _cells_of(window, action, device, len(actions), len(devices))
    n_cells = len(cell_window)
    # Distinct (cell, user) pairs: one int64 each (cells and users are each fewer than the rows).
    pair_keys = _distinct_pairs(cell * len(users) + user, user)
    pair_cell, pair_user = pair_keys // len(users), pair_keys % len(users)

    secs = sessions.column("secs_elapsed").cast(pa.float64())  # a column of nulls may come typed null
    present = _valid(secs)
    values = pc.fill_null(secs, 0.0).to_numpy(zero_copy_only=False)
    secs_count = np.bincount(cell, weights=present, minlength=n_cells).astype(np.int64)
    secs_sum = pa.array(np.bincount(cell, weights=values, minlength=n_cells))
    cells = pa.table(
        {
            "window_start": pa.array(cell_window * window_ms),
            "action_type": actions.take(pa.array(cell_action)),
            "device_type": devices.take(pa.array(cell_device)),
            "sessions": pa.array(np.bincount(cell, minlength=n_cells).astype(np.int64)),
            "secs_elapsed_sum": pc.if_else(pa.array(secs_count > 0), secs_sum, None),
            "secs_elapsed_count": pa.array(secs_count),
            # Users as ``count`` counts them: a null user_id is none (sessions have one; the
            # analytics of any table of sessions keep that meaning).
            "users": pa.array(
                np.bincount(pair_cell, weights=_valid(users)[pair_user], minlength=n_cells).astype(np.int64)
            ),
        }
    )
    cell_bucket = (cell_window * window_ms // bucket_ms) * bucket_ms
    buckets, bucket_of_cell = np.unique(cell_bucket, return_inverse=True)
    bucket_of_cell = bucket_of_cell.reshape(-1).astype(np.int16 if len(buckets) < 1 << 15 else np.int64)
    cell_order, cell_bounds = _grouped(bucket_of_cell, len(buckets))
    local = np.empty(n_cells, np.int32)  # a cell's row in its bucket's table
    local[cell_order] = np.arange(n_cells) - np.repeat(cell_bounds[:-1], np.diff(cell_bounds))
    pair_order, pair_bounds = _grouped(bucket_of_cell[pair_cell], len(buckets))
    for i, start in enumerate(buckets.tolist()):
        in_bucket = pair_order[pair_bounds[i] : pair_bounds[i + 1]]
        pairs = pa.table(
            {
                "cell": pa.array(local[pair_cell[in_bucket]]),
                "user_id": users.take(pa.array(pair_user[in_bucket])),
            }
        )
        yield int(start), Partial(cells.take(pa.array(cell_order[cell_bounds[i] : cell_bounds[i + 1]])), pairs)


def _grouped(group: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions ordered by group, stable; where each group starts in them, and the end)."""
    order = np.argsort(group, kind="stable")  # a radix sort for 16-bit groups
    return order, np.concatenate([[0], np.cumsum(np.bincount(group, minlength=groups))])


def _sorted_by_keys(table: pa.Table) -> pa.Table:
    return table.sort_by([(k, "ascending", "at_end") for k in KEYS])


def merge_partials(partials: list[Partial]) -> pa.Table:
    """Partials -> sessions, distinct_users, avg_secs_elapsed (and its sum and count) per
    (window, action_type, device_type), sorted by those keys."""
    if len(partials) == 1:
        merged = _sorted_by_keys(partials[0].cells)  # its cells are distinct, its users counted once each
    else:
        sums = (
            pa.concat_tables([p.cells for p in partials])
            .group_by(KEYS, use_threads=False)
            .aggregate([("sessions", "sum"), ("secs_elapsed_sum", "sum"), ("secs_elapsed_count", "sum")])
        )
        pairs = pa.concat_tables(
            [
                p.cells.select(KEYS).take(p.pairs.column("cell")).append_column("user_id", p.pairs.column("user_id"))
                for p in partials
            ]
        )
        users = pairs.group_by([*KEYS, "user_id"], use_threads=False).aggregate([])
        users = _sorted_by_keys(users.group_by(KEYS, use_threads=False).aggregate([("user_id", "count")]))
        sums = _sorted_by_keys(sums)
        if not sums.select(KEYS).equals(users.select(KEYS)):
            raise RuntimeError("analytics partials: the cells of the sums and of the users differ")
        merged = pa.table(
            {
                **{k: sums.column(k) for k in KEYS},
                "sessions": sums.column("sessions_sum"),
                "secs_elapsed_sum": sums.column("secs_elapsed_sum_sum"),
                "secs_elapsed_count": sums.column("secs_elapsed_count_sum"),
                "users": users.column("user_id_count"),
            }
        )  # sorted: both sides were, and checked equal
    secs_count = merged.column("secs_elapsed_count")
    avg = pc.if_else(
        pc.greater(secs_count, 0),
        pc.divide(merged.column("secs_elapsed_sum"), pc.cast(secs_count, pa.float64())),
        pa.scalar(None, pa.float64()),
    )
    return pa.table(
        {
            **{k: merged.column(k) for k in KEYS},
            "sessions": merged.column("sessions"),
            "distinct_users": merged.column("users"),
            "avg_secs_elapsed": avg,
            "secs_elapsed_sum": merged.column("secs_elapsed_sum"),
            "secs_elapsed_count": secs_count,
        }
    )


def _ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


class PartialCoder(beam.coders.Coder):
    """A ``Partial`` as two Arrow IPC streams (the first length-prefixed): one copy to write,
    none to read, where pickle copied every buffer both ways."""

    def encode(self, value: Partial) -> bytes:
        cells, pairs = _ipc(value.cells), _ipc(value.pairs)
        return b"".join([len(cells).to_bytes(8, "little"), cells, pairs])

    def decode(self, encoded: bytes) -> Partial:
        buffer = pa.py_buffer(encoded)
        size = int.from_bytes(encoded[:8], "little")
        cells = pa.ipc.open_stream(buffer.slice(8, size)).read_all()
        pairs = pa.ipc.open_stream(buffer.slice(8 + size)).read_all()
        return Partial(cells, pairs)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return Partial


beam.coders.registry.register_coder(Partial, PartialCoder)
