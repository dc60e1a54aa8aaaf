"""Whose record is it: the identifier rules the purge and its verification share.

Two rules live here, so that the rewrite and the independent verification
(``verify.py``) decide the same way while reading and matching files separately:

- the canonical identifier form (``beam_rtbf.identifiers``: trimmed, Unicode NFC,
  zero-width characters removed, e-mail addresses case-folded), applied to request
  identifiers and to stored values before they are compared;
- which subject a dead letter belongs to. A dead letter keeps the raw bytes of a
  record that failed to parse. If those bytes still parse as a record (a JSON
  object, or a line of the Airbnb CSV/TSV layout), the record belongs to the
  identifiers in its identifier fields, and only to them: ``{"user_id": "u9",
  "secs_elapsed": 42}`` is u9's, not subject 42's (``matched_by="field"``). Only
  bytes that cannot be parsed at all are matched by whole identifier tokens in
  their text (``matched_by="raw_token"``), and receipts count those apart.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

from beam_rtbf.identifiers import ZERO_WIDTH, canonical_id
from beam_rtbf.records import AIRBNB_COLUMNS

__all__ = [
    "canonical_id",
    "SubjectIdentifiers",
    "dead_letter_record",
    "MATCHED_BY_FIELD",
    "MATCHED_BY_RAW_TOKEN",
    "RECORD_ID_FIELDS",
]

ZERO_WIDTH_RE = re.compile(f"[{ZERO_WIDTH}]")
MATCHED_BY_FIELD = "field"
MATCHED_BY_RAW_TOKEN = "raw_token"
# Fields of a raw JSON record that identify its subject (sessions and erasure requests).
RECORD_ID_FIELDS = ("user_id", "subject_id", "email", "device_id", "aliases")


def dead_letter_record(line: bytes) -> tuple[list[str] | None, str]:
    """One dead-letter line -> (identifier values of its record, or None if unparseable; the raw text).

    ``line`` is a dead-letter envelope (``{"raw": ..., "raw_base64": ..., ...}``); a line
    that is not one (a torn or foreign line) is itself treated as unparseable raw bytes.
    """
    try:
        envelope = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, line.decode("utf-8", "replace")
    if not isinstance(envelope, dict) or not ({"raw", "raw_base64"} & envelope.keys()):
        return None, line.decode("utf-8", "replace")
    raw_text = envelope.get("raw")
    if raw_text is None and envelope.get("raw_base64"):
        raw = base64.b64decode(envelope["raw_base64"])
        try:
            raw_text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, raw.decode("utf-8", "replace")
    columns = envelope.get("columns")
    if not (isinstance(columns, list) and columns and all(isinstance(c, str) for c in columns)):
        columns = None
    return _record_identifiers(str(raw_text or ""), columns), str(raw_text or "")


_CSV_ID_COLUMNS = ("user_id", "email", "device_id")


def _record_identifiers(text: str, columns: Sequence[str] | None = None) -> list[str] | None:
    """Identifier values of a raw record, or None if it is neither a JSON object nor a CSV/TSV line.

    A CSV/TSV line is read by ``columns`` (its file's header, kept in the dead letter)
    or, without them, in the Airbnb layout (user id first)."""
    stripped = text.strip()
    if not stripped:
        return None
    if stripped[0] in '{["':
        try:
            record = json.loads(stripped)
        except json.JSONDecodeError:
            return None
        if not isinstance(record, dict):
            return None
        values: list[str] = []
        for name in RECORD_ID_FIELDS:
            values.extend(_field_values(record.get(name)))
        return values
    delimiter = "\t" if "\t" in stripped else ","
    try:
        fields = next(csv.reader([stripped], delimiter=delimiter, strict=True))
    except (csv.Error, StopIteration):
        return None
    layout = tuple(columns) if columns is not None else AIRBNB_COLUMNS
    if len(fields) != len(layout):  # not the layout: the parser called it malformed too
        return None
    return [value for name, value in zip(layout, fields) if name in _CSV_ID_COLUMNS]


def _field_values(value: object) -> list[str]:
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, (str, int, float)):
        return [str(value)]
    if isinstance(value, list):
        return [v for item in value for v in _field_values(item)]
    return [json.dumps(value)]  # a nested object where an id belongs: matched as text below


class SubjectIdentifiers:
    """The canonical identifiers of a purge's requests, and which requests name each."""

    def __init__(self, id_requests: Mapping[str, Sequence[str]]) -> None:
        canonical: dict[str, set[str]] = {}
        for identifier, requests in id_requests.items():
            canonical.setdefault(canonical_id(identifier), set()).update(requests)
        canonical.pop("", None)  # an empty identifier names nobody
        self.requests_of: dict[str, tuple[str, ...]] = {k: tuple(sorted(v)) for k, v in canonical.items()}
        plain = [i for i in self.requests_of if "@" not in i]
        emails = [i for i in self.requests_of if "@" in i]
        self._plain = _token_pattern(plain)
        self._emails = _token_pattern(emails)

    def __bool__(self) -> bool:
        return bool(self.requests_of)

    def in_values(self, values: Iterable[str]) -> set[str]:
        """The canonical identifiers among these field values."""
        found = set()
        for value in values:
            key = canonical_id(value)
            if key in self.requests_of:
                found.add(key)
            elif key.startswith("{"):  # a nested object in an id field: its text, token by token
                found |= self.in_text(key)
        return found

    def in_text(self, text: str) -> set[str]:
        """Whole-identifier tokens in raw text ('u1' does not match inside 'u10').

        The text is searched as it is and with JSON ``\\uXXXX`` escapes decoded: a cut-off
        JSON line from an ASCII-only encoder spells ``josé`` as ``jos\\u00e9``."""
        found: set[str] = set()
        for variant in dict.fromkeys((text, _json_unescaped(text))):
            normal = unicodedata.normalize("NFC", ZERO_WIDTH_RE.sub("", variant))
            if self._plain is not None:
                found.update(self._plain.findall(normal))
            if self._emails is not None:
                found.update(self._emails.findall(normal.casefold()))
        return found

    def in_dead_letter(self, line: bytes) -> tuple[set[str], str]:
        """The subjects' identifiers a dead-letter line belongs to, and how it was matched."""
        values, text = dead_letter_record(line)
        if values is None:
            return self.in_text(text), MATCHED_BY_RAW_TOKEN
        return self.in_values(values), MATCHED_BY_FIELD

    def requests_for(self, identifiers: Iterable[str]) -> set[str]:
        return {r for i in identifiers for r in self.requests_of.get(i, ())}


_JSON_ESCAPES_RE = re.compile(r"(?:\\u[0-9a-fA-F]{4})+")


def _json_unescaped(text: str) -> str:
    """``text`` with runs of JSON ``\\uXXXX`` escapes decoded (surrogate pairs joined)."""
    if "\\u" not in text:
        return text

    def decode(match: re.Match[str]) -> str:
        units = match.group(0)
        return (
            units.encode("ascii").decode("unicode_escape").encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        )

    return _JSON_ESCAPES_RE.sub(decode, text)


def _token_pattern(ids: Sequence[str]) -> re.Pattern[str] | None:
    if not ids:
        return None
    alternatives = "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
    return re.compile(rf"(?<![\w@.+-])(?:{alternatives})(?![\w@.+-])")
