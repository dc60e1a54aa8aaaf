"""Thrift's compact protocol, read into a generic tree and written back byte for byte.

A Parquet footer (``FileMetaData``) is a Thrift struct in the compact protocol. Splicing a
file's row groups (``splice.py``) changes a few integers in it (page offsets, row counts)
and keeps everything else as it was, including fields this code does not know. So the
footer is read without a schema: a struct is its fields in order, each a field id, a
compact type and a value, and writing that tree back gives the same bytes.

Values by compact type: booleans (in a struct) ``bool``; byte, i16, i32, i64 ``int``;
double the 8 stored bytes; binary ``bytes``; list and set ``Seq``; map ``Map``; struct
``Struct``. A boolean element of a list is kept as its stored byte.

Spec: https://github.com/apache/thrift/blob/master/doc/specs/thrift-compact-protocol.md
"""

from __future__ import annotations

import dataclasses
from typing import Any

from beam_rtbf.varint import VarintError, read_varint

__all__ = [
    "Struct",
    "Seq",
    "Map",
    "ThriftError",
    "read_struct",
    "write_struct",
    "skip_struct",
    "field_spans",
    "list_element_spans",
    "encode_value",
]

STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
_MAX_DEPTH = 64


class ThriftError(ValueError):
    """The bytes are not a well-formed compact-protocol struct."""


@dataclasses.dataclass
class Seq:
    element_type: int
    items: list[Any]


@dataclasses.dataclass
class Map:
    key_type: int
    value_type: int
    items: list[tuple[Any, Any]]


class Struct:
    """A struct's fields in their stored order: ``{field id: (compact type, value)}``."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[int, tuple[int, Any]] | None = None) -> None:
        self.fields = fields if fields is not None else {}

    def get(self, field_id: int, default: Any = None) -> Any:
        entry = self.fields.get(field_id)
        return default if entry is None else entry[1]

    def set(self, field_id: int, value: Any) -> None:
        """Change a field the struct has (its type stays): new fields would need their place and type."""
        kind, _ = self.fields[field_id]
        self.fields[field_id] = (kind, value)

    def __contains__(self, field_id: int) -> bool:
        return field_id in self.fields


# -- reading -----------------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    try:
        return read_varint(data, pos)
    except VarintError as exc:
        raise ThriftError(str(exc)) from exc


def _list_header(data: bytes, pos: int) -> tuple[int, int, int]:
    """(element count, element type, position of the first element) of the list at ``pos``."""
    if pos >= len(data):
        raise ThriftError("truncated list")
    header = data[pos]
    size, element = header >> 4, header & 0x0F
    pos += 1
    if size == 15:
        size, pos = _varint(data, pos)
    _check_count(data, pos, size)
    return size, element, pos


def _zigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _value(data: bytes, pos: int, kind: int, depth: int) -> tuple[Any, int]:
    if kind in (I16, I32, I64):
        raw, pos = _varint(data, pos)
        return _zigzag(raw), pos
    if kind == BINARY:
        size, pos = _varint(data, pos)
        if pos + size > len(data):
            raise ThriftError("truncated binary")
        return data[pos : pos + size], pos + size
    if kind == STRUCT:
        return _struct(data, pos, depth + 1)
    if kind in (BYTE, TRUE, FALSE):  # a boolean list element is one byte, kept as stored
        if pos >= len(data):
            raise ThriftError("truncated byte")
        return data[pos], pos + 1
    if kind == DOUBLE:
        if pos + 8 > len(data):
            raise ThriftError("truncated double")
        return data[pos : pos + 8], pos + 8
    if kind in (LIST, SET):
        size, element, pos = _list_header(data, pos)
        items = []
        for _ in range(size):
            item, pos = _value(data, pos, element, depth)
            items.append(item)
        return Seq(element, items), pos
    if kind == MAP:
        size, pos = _varint(data, pos)
        if size == 0:
            return Map(0, 0, []), pos
        _check_count(data, pos, size)
        types = data[pos]
        pos += 1
        pairs = []
        for _ in range(size):
            key, pos = _value(data, pos, types >> 4, depth)
            value, pos = _value(data, pos, types & 0x0F, depth)
            pairs.append((key, value))
        return Map(types >> 4, types & 0x0F, pairs), pos
    raise ThriftError(f"unknown compact type {kind}")


def _field_header(data: bytes, pos: int, last: int) -> tuple[int, int, int]:
    """(compact type, field id, position of the value) of the field header at ``pos``; the id is
    stored as a delta from the ``last`` field's (1-15) or, in a long header, as itself."""
    if pos >= len(data):
        raise ThriftError("truncated struct")
    header = data[pos]
    kind, delta = header & 0x0F, header >> 4
    if kind == STOP or delta:
        return kind, last + delta, pos + 1
    raw, pos = _varint(data, pos + 1)
    return kind, _zigzag(raw), pos


def _struct(data: bytes, pos: int, depth: int) -> tuple[Struct, int]:
    if depth > _MAX_DEPTH:
        raise ThriftError("structs nested too deep")
    fields: dict[int, tuple[int, Any]] = {}
    last = 0
    while True:
        kind, field_id, pos = _field_header(data, pos, last)
        if kind == STOP:
            return Struct(fields), pos
        if kind in (TRUE, FALSE):
            value: Any = kind == TRUE
        else:
            value, pos = _value(data, pos, kind, depth)
        fields[field_id] = (kind, value)
        last = field_id


def read_struct(data: bytes, pos: int = 0) -> tuple[Struct, int]:
    """The struct starting at ``pos``, and the position after it."""
    try:
        return _struct(data, pos, 0)
    except (IndexError, RecursionError) as exc:
        raise ThriftError(f"malformed struct ({type(exc).__name__})") from exc


def _skip_value(data: bytes, pos: int, kind: int) -> int:
    """The position after a value of compact type ``kind`` at ``pos``, without building it (callers
    turn the IndexError of a truncated value into ThriftError)."""
    if kind in (I16, I32, I64):
        while data[pos] & 0x80:
            pos += 1
        return pos + 1
    if kind == BINARY:
        size, pos = _varint(data, pos)
        return _within(data, pos + size)
    if kind == STRUCT:
        return _skip_struct(data, pos)
    if kind in (BYTE, TRUE, FALSE):
        return _within(data, pos + 1)
    if kind == DOUBLE:
        return _within(data, pos + 8)
    if kind in (LIST, SET):
        size, element, pos = _list_header(data, pos)
        for _ in range(size):
            pos = _skip_value(data, pos, element)
        return pos
    if kind == MAP:
        size, pos = _varint(data, pos)
        if size:
            _check_count(data, pos, size)
            types = data[pos]
            pos += 1
            for _ in range(size):
                pos = _skip_value(data, _skip_value(data, pos, types >> 4), types & 0x0F)
        return pos
    raise ThriftError(f"unknown compact type {kind}")


def _within(data: bytes, end: int) -> int:
    if end > len(data):
        raise ThriftError("value runs past the end")
    return end


def _check_count(data: bytes, pos: int, count: int) -> None:
    """Every element takes at least a byte: a count beyond the bytes left is malformed (and would loop)."""
    if count > len(data) - pos:
        raise ThriftError(f"{count} elements claimed in {len(data) - pos} bytes")


def skip_struct(data: bytes, pos: int = 0) -> int:
    """The position after the struct at ``pos``; ThriftError if it is malformed."""
    try:
        return _skip_struct(data, pos)
    except (IndexError, RecursionError) as exc:
        raise ThriftError(f"malformed struct ({type(exc).__name__})") from exc


def _skip_struct(data: bytes, pos: int) -> int:
    """The position after the struct at ``pos`` (integers and binaries, most of a footer, inline)."""
    while True:
        header = data[pos]
        pos += 1
        kind = header & 0x0F
        if kind == STOP:
            return pos
        if not header >> 4:  # a field id of its own: skipped, as ids do not matter here
            while data[pos] & 0x80:
                pos += 1
            pos += 1
        if kind == I16 or kind == I32 or kind == I64:
            while data[pos] & 0x80:
                pos += 1
            pos += 1
        elif kind == BINARY:
            size, pos = _varint(data, pos)
            pos = _within(data, pos + size)
        elif kind != TRUE and kind != FALSE:
            pos = _skip_value(data, pos, kind)


def field_spans(data: bytes, pos: int = 0) -> dict[int, tuple[int, int, int]]:
    """Where each field's value lies in the struct at ``pos``: ``{field id: (type, start, end)}``
    (a boolean's value is in its header: an empty span)."""
    spans: dict[int, tuple[int, int, int]] = {}
    last = 0
    try:
        while True:
            kind, field_id, pos = _field_header(data, pos, last)
            if kind == STOP:
                return spans
            start = pos
            if kind not in (TRUE, FALSE):
                pos = _skip_value(data, pos, kind)
            spans[field_id] = (kind, start, pos)
            last = field_id
    except (IndexError, RecursionError) as exc:
        raise ThriftError(f"malformed struct ({type(exc).__name__})") from exc


def list_element_spans(data: bytes, start: int) -> tuple[int, list[tuple[int, int]]]:
    """(element type, each element's [start, end)) of the list whose value starts at ``start``."""
    try:
        size, element, pos = _list_header(data, start)
        spans = []
        for _ in range(size):
            end = _skip_value(data, pos, element)
            spans.append((pos, end))
            pos = end
        return element, spans
    except (IndexError, RecursionError) as exc:
        raise ThriftError(f"malformed list ({type(exc).__name__})") from exc


def encode_value(kind: int, value: Any) -> bytes:
    """A value's bytes as a field of compact type ``kind`` stores them (after the field header)."""
    out = bytearray()
    _put_value(out, kind, value)
    return bytes(out)


# -- writing -----------------------------------------------------------------------------


def _put_varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_zigzag(out: bytearray, value: int, bits: int) -> None:
    _put_varint(out, ((value << 1) ^ (value >> (bits - 1))) & ((1 << bits) - 1))


_BITS = {I16: 16, I32: 32, I64: 64}


def _put_value(out: bytearray, kind: int, value: Any) -> None:
    if kind in _BITS:
        _put_zigzag(out, value, _BITS[kind])
    elif kind == BINARY:
        _put_varint(out, len(value))
        out += value
    elif kind == STRUCT:
        _put_struct(out, value)
    elif kind in (BYTE, TRUE, FALSE):
        out.append(value & 0xFF)
    elif kind == DOUBLE:
        out += value
    elif kind in (LIST, SET):
        size = len(value.items)
        if size < 15:
            out.append((size << 4) | value.element_type)
        else:
            out.append(0xF0 | value.element_type)
            _put_varint(out, size)
        for item in value.items:
            _put_value(out, value.element_type, item)
    elif kind == MAP:
        _put_varint(out, len(value.items))
        if value.items:
            out.append((value.key_type << 4) | value.value_type)
            for key, item in value.items:
                _put_value(out, value.key_type, key)
                _put_value(out, value.value_type, item)
    else:
        raise ThriftError(f"unknown compact type {kind}")


def _put_struct(out: bytearray, struct: Struct) -> None:
    last = 0
    for field_id, (kind, value) in struct.fields.items():
        if kind in (TRUE, FALSE):
            kind, value = (TRUE if value else FALSE), None
        delta = field_id - last
        if 0 < delta <= 15:
            out.append((delta << 4) | kind)
        else:
            out.append(kind)
            _put_zigzag(out, field_id, 16)
        if value is not None:
            _put_value(out, kind, value)
        last = field_id
    out.append(STOP)


def write_struct(struct: Struct) -> bytes:
    out = bytearray()
    _put_struct(out, struct)
    return bytes(out)
