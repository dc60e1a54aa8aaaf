"""Base-128 varints, as protobuf (KPL aggregates) and Thrift's compact protocol (Parquet footers) store integers."""

from __future__ import annotations

__all__ = ["VarintError", "read_varint"]


class VarintError(ValueError):
    """Truncated, or longer than a 64-bit value takes (10 bytes)."""


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it) of the unsigned varint at ``pos``."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise VarintError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise VarintError("varint longer than 10 bytes")
