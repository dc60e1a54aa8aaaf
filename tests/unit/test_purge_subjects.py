"""Whose record is it: canonical identifiers, dead-letter ownership, and the verification's vector match."""

from __future__ import annotations

import base64
import json

import pyarrow as pa
import pytest

from beam_rtbf.purge.subjects import SubjectIdentifiers, canonical_id, dead_letter_record
from beam_rtbf.purge.verify import StoredFile, VerifyIdentifiers, canonical_candidates, verify_file


def _letter(raw: bytes) -> bytes:
    try:
        body = {"raw": raw.decode("utf-8"), "raw_base64": None}
    except UnicodeDecodeError:
        body = {"raw": None, "raw_base64": base64.b64encode(raw).decode()}
    return json.dumps({"stream": "sessions", "source": "s", "position": "s@42", "reason": "r", **body}).encode()


SUBJECTS = SubjectIdentifiers({"42": ["req-42"], "Alice@Example.com": ["req-a"], "U7": ["req-u"]})


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b'{"user_id": "42", "event_time": "bad"}', ({"42"}, "field")),
        (b'{"user_id": 42, "event_time": "bad"}', ({"42"}, "field")),
        (b'{"user_id": "u9", "secs_elapsed": 42, "event_time": "bad"}', (set(), "field")),
        (b'{"user_id": "u9", "email": " ALICE@example.com\\u200b"}', ({"alice@example.com"}, "field")),
        (b'{"subject_id": "x", "aliases": ["42"]}', ({"42"}, "field")),
        (b"42,show,view,,iPhone,-1", ({"42"}, "field")),
        (b"u9\tshow\tview\t\tiPhone\t42", (set(), "field")),
        (b"this is not a record 42", ({"42"}, "raw_token")),
        (b'{"user_id": "u9" "broken 42', ({"42"}, "raw_token")),
        (b"u420 and 142 are not 42x", (set(), "raw_token")),
        (b"\xff\xfe 42", ({"42"}, "raw_token")),
        (b"[42]", ({"42"}, "raw_token")),
    ],
)
def test_dead_letter_belongs_to_its_record_raw_tokens_only_when_unparseable(raw, expected):
    assert SUBJECTS.in_dead_letter(_letter(raw)) == expected


def test_a_torn_dead_letter_line_is_matched_as_raw_text():
    assert dead_letter_record(b'{"raw": "42, tor')[0] is None
    assert SUBJECTS.in_dead_letter(b'{"raw": "42, tor') == ({"42"}, "raw_token")


SAMPLES = [
    "42", " 42", "42 ", "u7", "U7", " U7\t", "alice@example.com", "ALICE@EXAMPLE.COM ", "Alice@Example.com",
    "alice@example.com\u200b", "\u200b42", "caf\u0065\u0301@x.org", "café@x.org", "ﬁ@x.org", "\x1c42", "", "4 2",
]  # fmt: skip


def test_vector_candidates_never_miss_what_canonical_id_matches():
    """The vectorised pre-filter is a superset of the exact rule, whatever canonical_id's details."""
    ids = VerifyIdentifiers({"42": ["r"], "alice@example.com": ["r"], "U7": ["r"], "café@x.org": ["r"]})
    values = pa.array(SAMPLES + [None], pa.string())
    candidates = canonical_candidates(values, ids.lowered)
    for value, candidate in zip(SAMPLES, candidates):
        if canonical_id(value) in ids.subjects.requests_of:
            assert candidate, value
    table = pa.table({"user_id": values})
    exact = sum(canonical_id(v) in ids.subjects.requests_of for v in SAMPLES)
    assert ids.table_found(table, ["user_id"]) == {"r": exact}
    assert exact == 13


def test_verify_file_counts_rows_once_and_reports_unreadable_files(tmp_path):
    import pyarrow.parquet as pq

    ids = VerifyIdentifiers({"alice": ["req-a"], "alice@example.com": ["req-a"], "bob": ["req-b"]})
    path = tmp_path / "part.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": ["alice", "x", "guest", "bob"],
                "email": ["alice@example.com", None, "Alice@Example.com", None],
                "device_id": [None, None, None, None],
            }
        ),
        path,
    )
    result = verify_file(StoredFile("archive", str(path), path.stat().st_size), ids)
    assert (result.rows, result.found, result.error) == (4, {"req-a": 2, "req-b": 1}, "")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"nope")
    result = verify_file(StoredFile("archive", str(bad), 4), ids)
    assert result.error.startswith(f"{bad}: not a readable Parquet file")
    gone = verify_file(StoredFile("archive", str(tmp_path / "gone.parquet"), 9), ids)
    assert (gone.error, gone.rows, gone.file.size_bytes) == ("", 0, 0)
