"""Arrow tables -> JSON lines with Arrow's vectorised string kernels (no ``json.dumps`` per row)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["to_json_lines", "concat_strings"]


def _json_string(column: pa.Array) -> pa.Array:
    """Strings as JSON values: quoted, with backslashes, quotes and control characters escaped."""
    if pc.any(pc.match_substring_regex(column, "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]")).as_py():
        # Rare control characters: let json.dumps escape this column.
        return pa.array([json.dumps(v) if v is not None else "null" for v in column.to_pylist()], pa.string())
    escaped = pc.replace_substring(column, "\\", "\\\\")
    escaped = pc.replace_substring(escaped, '"', '\\"')
    escaped = pc.replace_substring_regex(escaped, "\n", "\\\\n")
    escaped = pc.replace_substring_regex(escaped, "\r", "\\\\r")
    escaped = pc.replace_substring_regex(escaped, "\t", "\\\\t")
    return pc.fill_null(pc.binary_join_element_wise('"', escaped, '"', ""), "null")


def _json_value(column: pa.Array) -> pa.Array:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return _json_string(column)
    if pa.types.is_floating(column.type):
        finite = pc.is_finite(column)
        column = pc.if_else(finite, column, pa.scalar(None, column.type))
    if pa.types.is_boolean(column.type) or pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return pc.fill_null(pc.cast(column, pa.string()), "null")
    if pa.types.is_null(column.type):
        return pa.array(["null"] * len(column), pa.string())
    raise TypeError(f"no JSON encoding for Arrow type {column.type}")


def concat_strings(lines: pa.Array) -> bytes:
    """All strings of an Arrow string array back to back, straight from its data buffer (no copy per value)."""
    if len(lines) == 0:
        return b""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
    return lines.buffers()[2].to_pybytes()[int(offsets[0]) : int(offsets[-1])]


def to_json_lines(
    data: pa.Table | pa.RecordBatch, rename: dict[str, str] | None = None, drop_all_null: bool = False
) -> bytes:
    """One JSON object per row, keys in column order."""
    if isinstance(data, pa.Table):
        data = data.combine_chunks()
        columns = [
            data.column(i).chunk(0) if data.column(i).num_chunks else pa.array([], data.column(i).type)
            for i in range(data.num_columns)
        ]
    else:
        columns = list(data.columns)
    if data.num_rows == 0:
        return b""
    rename = rename or {}
    parts: list[pa.Array | str] = []
    for name, column in zip(data.schema.names, columns):
        if drop_all_null and column.null_count == len(column):
            continue
        key = rename.get(name, name).replace("\\", "\\\\").replace('"', '\\"')
        parts.append(("{" if not parts else ",") + f'"{key}":')
        parts.append(_json_value(column))
    parts.append("}\n")
    return concat_strings(pc.binary_join_element_wise(*parts, ""))
