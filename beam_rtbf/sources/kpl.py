"""KPL aggregated Kinesis records: de-aggregation as the KCL does it, in a few lines of protobuf.

A producer using the Kinesis Producer Library packs many user records into one
Kinesis record::

    F3 89 9A C2                      magic
    AggregatedRecord (protobuf)      1: repeated string partition_key_table
                                     2: repeated string explicit_hash_key_table
                                     3: repeated Record {1: uint64 partition_key_index,
                                                         2: uint64 explicit_hash_key_index,
                                                         3: bytes data, 4: repeated Tag}
    MD5 of the protobuf bytes        16 bytes

``deaggregate`` returns the user records; a record without the magic is not
aggregated and passes through whole. Unlike the KCL, which hands a record whose
checksum or protobuf is bad to the application as if it were not aggregated,
a corrupt aggregate raises ``KplError`` with the reason, so the reader turns it
into one dead letter (raw bytes, position, reason) rather than a garbage session.
The format is small enough that a hand-written varint decoder beats a
generated-protobuf dependency (the PyPI ``aws-kinesis-agg`` package pins its
own generated code to one protobuf major version, which Beam also pins).
"""

from __future__ import annotations

import hashlib

from beam_rtbf.varint import VarintError, read_varint

__all__ = ["KPL_MAGIC", "KplError", "UserRecord", "is_aggregated", "deaggregate", "aggregate"]

KPL_MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST_BYTES = 16


class KplError(ValueError):
    """A record with the KPL magic that is not a valid aggregate; the message is the reason."""


class UserRecord(tuple):
    """(partition_key, explicit_hash_key or None, data) of one de-aggregated user record."""

    __slots__ = ()

    def __new__(cls, partition_key: str, explicit_hash_key: str | None, data: bytes) -> UserRecord:
        return super().__new__(cls, (partition_key, explicit_hash_key, data))

    @property
    def partition_key(self) -> str:
        return self[0]

    @property
    def explicit_hash_key(self) -> str | None:
        return self[1]

    @property
    def data(self) -> bytes:
        return self[2]


def is_aggregated(data: bytes) -> bool:
    return data[:4] == KPL_MAGIC


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    try:
        return read_varint(buf, pos)
    except VarintError as exc:
        raise KplError(f"bad KPL aggregate: {exc}") from exc


def _fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message; value is int or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise KplError("bad KPL aggregate: field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise KplError("bad KPL aggregate: field runs past the end")
            value, pos = buf[pos : pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > len(buf):
                raise KplError("bad KPL aggregate: field runs past the end")
            value, pos = int.from_bytes(buf[pos : pos + size], "little"), pos + size
        else:
            raise KplError(f"bad KPL aggregate: unsupported wire type {wire}")
        yield number, wire, value


def _text(value, what: str) -> str:
    if not isinstance(value, bytes):
        raise KplError(f"bad KPL aggregate: {what} is not a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KplError(f"bad KPL aggregate: {what} is not UTF-8") from exc


def deaggregate(data: bytes) -> list[UserRecord]:
    """The user records of one Kinesis record (itself, whole, when it is not aggregated)."""
    if not is_aggregated(data):
        return [UserRecord("", None, data)]
    if len(data) < len(KPL_MAGIC) + _DIGEST_BYTES:
        raise KplError(f"bad KPL aggregate: {len(data)} bytes is shorter than magic and checksum")
    body, digest = data[len(KPL_MAGIC) : -_DIGEST_BYTES], data[-_DIGEST_BYTES:]
    if hashlib.md5(body, usedforsecurity=False).digest() != digest:
        raise KplError("bad KPL aggregate: MD5 checksum mismatch")
    partition_keys: list[str] = []
    hash_keys: list[str] = []
    raw_records: list[bytes] = []
    for number, _, value in _fields(body):
        if number == 1:
            partition_keys.append(_text(value, "partition key"))
        elif number == 2:
            hash_keys.append(_text(value, "explicit hash key"))
        elif number == 3:
            if not isinstance(value, bytes):
                raise KplError("bad KPL aggregate: record is not a message")
            raw_records.append(value)
    out = []
    for index, raw in enumerate(raw_records):
        pk_index = hk_index = payload = None
        for number, wire, value in _fields(raw):
            if number == 1 and wire == 0:
                pk_index = value
            elif number == 2 and wire == 0:
                hk_index = value
            elif number == 3 and wire == 2:
                payload = value
        if pk_index is None or payload is None:
            raise KplError(f"bad KPL aggregate: record {index} lacks its partition key index or data")
        if pk_index >= len(partition_keys):
            raise KplError(f"bad KPL aggregate: record {index} names partition key {pk_index} of {len(partition_keys)}")
        if hk_index is not None and hk_index >= len(hash_keys):
            raise KplError(f"bad KPL aggregate: record {index} names hash key {hk_index} of {len(hash_keys)}")
        out.append(UserRecord(partition_keys[pk_index], hash_keys[hk_index] if hk_index is not None else None, payload))
    return out


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _encode_varint(number << 3) + _encode_varint(payload)
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def aggregate(records: list[tuple[str, bytes]]) -> bytes:
    """One KPL aggregated record from (partition_key, data) pairs, as the KPL writes it."""
    keys = list(dict.fromkeys(key for key, _ in records))
    index = {key: i for i, key in enumerate(keys)}
    body = b"".join(_field(1, key.encode("utf-8")) for key in keys)
    body += b"".join(_field(3, _field(1, index[key]) + _field(3, data)) for key, data in records)
    return KPL_MAGIC + body + hashlib.md5(body, usedforsecurity=False).digest()
