"""Parse erasure requests from a dedicated stream or pick them out of a shared event stream.

On a dedicated requests input every well-formed record is a request. A request
without ``requested_at`` is dated by its arrival (the chunk's ``arrival_ms``,
else the parse time). ``request_id`` is trimmed and must be at most 128
characters without control or invisible characters. On a
shared stream (the second seed: one Kinesis stream carrying many event kinds)
only records whose ``tag_field`` holds one of ``tag_values`` are requests;
every other well-formed event is ignored and counted, not an error.

Pure functions, no Beam: the Beam step is ``beam_rtbf.parse.requests.ParseRequests``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from beam_rtbf.parse.lines import DEFAULT_MAX_RECORD_BYTES, line_bounds, load_json_object, record_position
from beam_rtbf.records import DeadLetter, ErasureRequest, RawBatch, now_ms

__all__ = ["RequestSelector", "ParsedRequests", "parse_request_chunk", "requests_from_lines"]


@dataclasses.dataclass(frozen=True)
class RequestSelector:
    """Which events of a stream are erasure requests.

    ``tag_field=None`` means a dedicated stream: every record is a request.
    ``payload_field`` names a nested object holding the request fields, if any
    (e.g. ``{"type": "gdpr.delete_user", "data": {...}}``).
    """

    tag_field: str | None = None
    tag_values: tuple[str, ...] = ("erasure_request",)
    payload_field: str | None = None


@dataclasses.dataclass
class ParsedRequests:
    """What one chunk of request input became; ``records_in = requests + ignored + dead letters``."""

    requests: list[ErasureRequest]
    dead_letters: list[DeadLetter]
    ignored: int
    records_in: int


def parse_request_chunk(
    raw: RawBatch,
    selector: RequestSelector = RequestSelector(),
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> ParsedRequests:
    """Parse a chunk of JSON-lines events; ``records_in = requests + ignored + dead letters``."""
    out = ParsedRequests([], [], 0, 0)
    arrival_ms = raw.arrival_ms or now_ms()  # requested_at of requests that carry none
    if raw.error is not None:
        out.dead_letters.append(DeadLetter("requests", raw.source, record_position(raw, 0, 0), raw.error, raw.data))
        out.records_in = 1
        return out
    starts, ends = line_bounds(raw.data)
    for index, (start, end) in enumerate(zip(starts.tolist(), ends.tolist())):
        line = raw.data[start:end]
        if not line.strip():
            continue
        out.records_in += 1

        def reject(reason: str, _line: bytes = line, _index: int = index, _start: int = start) -> None:
            out.dead_letters.append(
                DeadLetter("requests", raw.source, record_position(raw, _index, _start), reason, _line)
            )

        if end - start > max_record_bytes:
            reject(f"oversize record: {end - start} bytes > {max_record_bytes}")
            continue
        try:
            obj = load_json_object(line)
        except ValueError as exc:
            reject(str(exc))
            continue
        if selector.tag_field is not None:
            if obj.get(selector.tag_field) not in selector.tag_values:
                out.ignored += 1
                continue
            if selector.payload_field is not None:
                payload = obj.get(selector.payload_field)
                if not isinstance(payload, dict):
                    reject(f"erasure event without an object in {selector.payload_field!r}")
                    continue
                obj = {**{k: v for k, v in obj.items() if k != selector.payload_field}, **payload}
        try:
            out.requests.append(ErasureRequest.from_dict(obj, arrival_ms))
        except ValueError as exc:
            reject(str(exc))
    return out


def requests_from_lines(lines: Sequence[str], source: str = "inline") -> list[ErasureRequest]:
    """Convenience for tests and the CLI: parse JSON lines that must all be valid requests."""
    parsed = parse_request_chunk(RawBatch(source, "jsonl", ("\n".join(lines) + "\n").encode()))
    if parsed.dead_letters:
        raise ValueError("; ".join(d.reason for d in parsed.dead_letters))
    return parsed.requests
