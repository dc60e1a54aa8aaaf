"""Data contracts: sessions (as Arrow batches), erasure requests, raw input, dead letters.

Sessions travel through the graph as ``pyarrow.RecordBatch`` elements with
``SESSION_SCHEMA``, never as one Python object per record: that is what makes
the throughput targets in DESIGN.md reachable.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import unicodedata
from typing import Any

import pyarrow as pa

from beam_rtbf.identifiers import canonical_id, canonical_ids

__all__ = [
    "SESSION_SCHEMA",
    "SESSION_FIELDS",
    "AIRBNB_COLUMNS",
    "CSV_COLUMNS",
    "csv_header",
    "RawBatch",
    "DeadLetter",
    "ErasureRequest",
    "AcceptedRequest",
    "MAX_REQUEST_ID_CHARS",
    "check_request_id",
    "deadline_ms",
    "parse_time_ms",
    "now_ms",
]

SESSION_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("event_time_ms", pa.int64(), nullable=False),
        pa.field("action", pa.string()),
        pa.field("action_type", pa.string()),
        pa.field("action_detail", pa.string()),
        pa.field("device_type", pa.string()),
        pa.field("secs_elapsed", pa.float64()),
        pa.field("event_id", pa.string()),
        pa.field("email", pa.string()),
        pa.field("device_id", pa.string()),
    ]
)
SESSION_FIELDS = tuple(SESSION_SCHEMA.names)
ALIAS_COLUMNS = ("email", "device_id")
ID_COLUMNS = ("user_id", *ALIAS_COLUMNS)  # identifiers: compared only in canonical form (identifiers.py)

# Column order of the public Airbnb sessions file that the first seed replayed.
AIRBNB_COLUMNS = (
    "user_id",
    "action",
    "action_type",
    "action_detail",
    "device_type",
    "secs_elapsed",
)

# Every column a CSV/TSV header may name (in any order): the Airbnb layout plus the optional fields.
CSV_COLUMNS = (*AIRBNB_COLUMNS, "event_time", "event_id", "email", "device_id")


def csv_header(line: bytes, delimiter: str) -> tuple[str, ...] | None:
    """The column names if ``line`` is a header, else ``None``.

    A header is a line whose fields (trimmed, unquoted, case-folded) are distinct
    known column names including ``user_id``; anything else is a data row, so a
    row whose user id merely starts with "user_id" is never taken for a header.
    """
    try:
        text = line.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    names = tuple(field.strip().strip('"').strip().lower() for field in text.split(delimiter))
    if "user_id" not in names or len(set(names)) != len(names) or not set(names) <= set(CSV_COLUMNS):
        return None
    return names


REGULATIONS = ("gdpr", "ccpa")
KINDS = ("erase",)
# GDPR Art. 12(3): one month; CCPA 1798.130: 45 days.
DEADLINE_DAYS = {"gdpr": 30, "ccpa": 45}


def now_ms() -> int:
    return int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)


MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: beyond it a time is corrupt, not late


def parse_time_ms(value: Any) -> int:
    """Epoch millis from an int/float (millis) or an RFC 3339 string; ValueError otherwise.

    NaN, infinities, negatives and times past year 9999 are errors, so callers that
    catch ValueError turn every bad time into a dead letter rather than a crash."""
    if isinstance(value, bool):
        raise ValueError(f"bad time {value!r}")
    if isinstance(value, (int, float)):
        if not (0 <= value <= MAX_TIME_MS):  # also false for NaN
            raise ValueError(f"bad time {value!r}")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return parse_time_ms(int(text))
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"bad time {value!r}: not RFC 3339 or epoch millis") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return parse_time_ms(int(parsed.timestamp() * 1000))
    raise ValueError(f"bad time {value!r}")


def iso_ms(ms: int) -> str:
    return (
        dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def deadline_ms(regulation: str, requested_at_ms: int) -> int:
    return requested_at_ms + DEADLINE_DAYS[regulation] * 86_400_000


@dataclasses.dataclass(frozen=True)
class RawBatch:
    """Newline-delimited raw records from one source, with where they came from.

    ``positions`` gives one position per record for stream sources (shard and
    sequence number, partition and offset); file sources leave it ``None`` and
    positions are ``source@byte_offset`` computed from ``first_offset``.
    ``has_header``: the chunk starts a file, whose first line is skipped if it is
    a CSV header (``csv_header``). ``columns``: the CSV/TSV column order of the
    file's header (``None``: the Airbnb layout), so every chunk maps by name.
    ``error``: the source could not read on from here (a truncated or corrupt
    compressed file): ``data`` is what was left unparsed (a cut-off line, maybe
    empty) and the parsers make it one dead letter with this reason.
    """

    source: str
    fmt: str  # "jsonl" | "csv" | "tsv"
    data: bytes
    first_offset: int = 0
    positions: tuple[str, ...] | None = None
    arrival_ms: int = 0
    has_header: bool = False
    columns: tuple[str, ...] | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A rejected record: raw bytes, where it was, and a readable reason."""

    stream: str  # "sessions" | "requests"
    source: str
    position: str
    reason: str
    raw: bytes
    # The CSV/TSV column names of the file's header, when it had one: the purge then finds
    # the record's identifier fields by name (without it, a CSV line is read in the Airbnb layout).
    columns: tuple[str, ...] | None = None

    def to_json(self) -> str:
        try:
            raw_text, raw_b64 = self.raw.decode("utf-8"), None
        except UnicodeDecodeError:
            raw_text, raw_b64 = None, base64.b64encode(self.raw).decode("ascii")
        envelope = {
            "stream": self.stream,
            "source": self.source,
            "position": self.position,
            "reason": self.reason,
            "raw": raw_text,
            "raw_base64": raw_b64,
        }
        if self.columns is not None:
            envelope["columns"] = list(self.columns)
        return json.dumps(envelope, sort_keys=True)


MAX_REQUEST_ID_CHARS = 128
# Control, format (bidi overrides, zero-width), surrogate and line/paragraph separator characters.
_FORBIDDEN_ID_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def check_request_id(request_id: str) -> None:
    """ValueError unless ``request_id`` (already trimmed) is at most 128 printable characters."""
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise ValueError(f"request_id longer than {MAX_REQUEST_ID_CHARS} characters ({len(request_id)})")
    for index, char in enumerate(request_id):
        if unicodedata.category(char) in _FORBIDDEN_ID_CATEGORIES:
            raise ValueError(f"request_id has a control or invisible character U+{ord(char):04X} at index {index}")


@dataclasses.dataclass(frozen=True)
class ErasureRequest:
    """A data subject's request to be forgotten; ``request_id`` is the idempotency key."""

    request_id: str
    subject_id: str
    requested_at_ms: int
    regulation: str = "gdpr"
    kind: str = "erase"
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Every request, however it arrives (stream, forget, registry), names its subjects canonically.
        for identifier in (self.subject_id, *self.aliases):
            try:
                identifier.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate (a \ud800 escape, undecodable argv bytes)
                raise ValueError(
                    f"subject id or alias is not valid text (lone surrogate at index {exc.start})"
                ) from exc
        subject_id = canonical_id(self.subject_id)
        object.__setattr__(self, "subject_id", subject_id)
        object.__setattr__(self, "aliases", tuple(a for a in canonical_ids(self.aliases) if a != subject_id))

    @property
    def subject_ids(self) -> tuple[str, ...]:
        """The subject id first, then its aliases, without repeats."""
        return tuple(dict.fromkeys((self.subject_id, *self.aliases)))

    @property
    def deadline_ms(self) -> int:
        return deadline_ms(self.regulation, self.requested_at_ms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "subject_id": self.subject_id,
            "aliases": list(self.aliases),
            "requested_at": iso_ms(self.requested_at_ms),
            "regulation": self.regulation,
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any], arrival_ms: int | None = None) -> ErasureRequest:
        """Validate one decoded request; ValueError with a readable reason otherwise.

        ``requested_at`` absent (or null) means the time the record arrived:
        ``arrival_ms`` (the source's arrival time), else now. Streams like the
        second seed's carry no such field.
        """
        request_id = obj.get("request_id")
        subject_id = obj.get("subject_id", obj.get("user_id"))
        if not isinstance(request_id, str) or not request_id.strip():
            raise ValueError("missing request_id")
        check_request_id(request_id.strip())
        if not isinstance(subject_id, str) or not canonical_id(subject_id):
            raise ValueError("missing subject_id")
        regulation = str(obj.get("regulation") or "gdpr").lower()
        if regulation not in REGULATIONS:
            raise ValueError(f"unknown regulation {regulation!r} (expected one of {REGULATIONS})")
        kind = str(obj.get("kind") or "erase").lower()
        if kind not in KINDS:
            raise ValueError(f"unsupported kind {kind!r} (expected one of {KINDS})")
        if obj.get("requested_at") is None:
            requested_at_ms = arrival_ms if arrival_ms else now_ms()
        else:
            requested_at_ms = parse_time_ms(obj["requested_at"])
        aliases = obj.get("aliases") or []
        if isinstance(aliases, str):
            aliases = [aliases]
        for key in ("email", "device_id"):
            if isinstance(obj.get(key), str) and obj[key]:
                aliases = [*aliases, obj[key]]
        if not all(isinstance(a, str) and a for a in aliases):
            raise ValueError("aliases must be non-empty strings")
        return cls(
            request_id=request_id.strip(),
            subject_id=subject_id.strip(),
            requested_at_ms=requested_at_ms,
            regulation=regulation,
            kind=kind,
            aliases=tuple(a for a in dict.fromkeys(aliases) if a != subject_id),
        )


@dataclasses.dataclass(frozen=True)
class AcceptedRequest:
    """A request as the registry recorded it: when it became durable, at which version."""

    request: ErasureRequest
    accepted_at_ms: int
    version: int
    duplicate: bool = False
