"""records.py: time parsing, erasure-request validation, deadlines, dead letters."""

from __future__ import annotations

import base64
import json

import pytest

from beam_rtbf.records import DeadLetter, ErasureRequest, deadline_ms, parse_time_ms

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY_MS = 86_400_000


# --- parse_time_ms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (T0, T0),
        (1500.0, 1500),
        (1500.9, 1500),  # float millis are truncated, not rounded
        ("1767225600000", T0),
        ("  42 ", 42),
        ("0", 0),
        ("2026-01-01T00:00:00Z", T0),
        ("2026-01-01T00:00:00z", T0),
        ("2026-01-01T00:00:00+00:00", T0),
        ("2026-01-01T02:00:00+02:00", T0),
        ("2025-12-31T19:00:00-05:00", T0),
        ("2026-01-01T00:00:00.123Z", T0 + 123),
        ("2026-01-01T00:00:00.5+00:00", T0 + 500),
        ("2026-01-01T00:00:00.123456Z", T0 + 123),  # micros truncated to millis
        ("2026-01-01T00:00:00", T0),  # naive: UTC
        ("2026-01-01T00:00:00.250", T0 + 250),
        ("1970-01-01T00:00:00Z", 0),
        ("2026-03-01T12:34:56Z", T0 + (59 * DAY_MS) + (12 * 3600 + 34 * 60 + 56) * 1000),
    ],
)
def test_parse_time_ms_accepts(value, expected):
    assert parse_time_ms(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        -1,
        -0.5,
        float("nan"),
        float("-inf"),
        True,
        False,
        None,
        "",
        "   ",
        "garbage",
        "-5",
        "12abc",
        "2026-13-01T00:00:00Z",
        "2026-01-32T00:00:00Z",
        "yesterday",
        [T0],
        {"ms": T0},
        b"1767225600000",
    ],
)
def test_parse_time_ms_rejects_with_value_error(value):
    with pytest.raises(ValueError, match="bad time"):
        parse_time_ms(value)


def test_parse_time_ms_rejects_infinity_with_value_error():
    with pytest.raises(ValueError, match="bad time"):
        parse_time_ms(float("inf"))


# --- ErasureRequest.from_dict ------------------------------------------------------------


def test_from_dict_minimal_uses_defaults():
    request = ErasureRequest.from_dict({"request_id": "r1", "subject_id": "u1", "requested_at": "2026-01-01T00:00:00Z"})
    assert request == ErasureRequest(
        request_id="r1", subject_id="u1", requested_at_ms=T0, regulation="gdpr", kind="erase", aliases=()
    )
    assert request.subject_ids == ("u1",)


def test_from_dict_user_id_is_an_alias_of_subject_id():
    request = ErasureRequest.from_dict({"request_id": "r1", "user_id": "u7", "requested_at": 5})
    assert (request.subject_id, request.requested_at_ms) == ("u7", 5)


def test_from_dict_subject_id_wins_over_user_id():
    request = ErasureRequest.from_dict({"request_id": "r1", "subject_id": "s", "user_id": "u", "requested_at": 5})
    assert request.subject_id == "s"


def test_from_dict_strips_and_normalises_case():
    request = ErasureRequest.from_dict(
        {"request_id": " r1 ", "subject_id": " u1 ", "requested_at": "7", "regulation": "CCPA", "kind": "ERASE"}
    )
    assert (request.request_id, request.subject_id, request.requested_at_ms) == ("r1", "u1", 7)
    assert (request.regulation, request.kind) == ("ccpa", "erase")


def test_from_dict_collects_aliases_from_list_email_and_device_id():
    request = ErasureRequest.from_dict(
        {
            "request_id": "r1",
            "subject_id": "u1",
            "requested_at": 0,
            "aliases": ["alt-1", "alt-2"],
            "email": "u1@example.com",
            "device_id": "dev-9",
        }
    )
    assert request.aliases == ("alt-1", "alt-2", "u1@example.com", "dev-9")
    assert request.subject_ids == ("u1", "alt-1", "alt-2", "u1@example.com", "dev-9")


def test_from_dict_single_string_alias_and_dedup():
    request = ErasureRequest.from_dict(
        {"request_id": "r1", "subject_id": "u1", "requested_at": 0, "aliases": "a@x", "email": "a@x"}
    )
    assert request.aliases == ("a@x",)
    request = ErasureRequest.from_dict(
        {"request_id": "r1", "subject_id": "u1", "requested_at": 0, "aliases": ["u1", "b", "b"]}
    )
    assert request.aliases == ("b",)  # the subject itself and repeats are dropped


def test_from_dict_ignores_empty_email_and_device_id():
    request = ErasureRequest.from_dict(
        {"request_id": "r1", "subject_id": "u1", "requested_at": 0, "email": "", "device_id": None}
    )
    assert request.aliases == ()


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"subject_id": "u1", "requested_at": 0}, "missing request_id"),
        ({"request_id": "", "subject_id": "u1", "requested_at": 0}, "missing request_id"),
        ({"request_id": "   ", "subject_id": "u1", "requested_at": 0}, "missing request_id"),
        ({"request_id": 5, "subject_id": "u1", "requested_at": 0}, "missing request_id"),
        ({"request_id": "r1", "requested_at": 0}, "missing subject_id"),
        ({"request_id": "r1", "subject_id": " ", "requested_at": 0}, "missing subject_id"),
        ({"request_id": "r1", "user_id": 42, "requested_at": 0}, "missing subject_id"),
        (
            {"request_id": "r1", "subject_id": "u1", "requested_at": 0, "regulation": "lgpd"},
            "unknown regulation 'lgpd' (expected one of ('gdpr', 'ccpa'))",
        ),
        (
            {"request_id": "r1", "subject_id": "u1", "requested_at": 0, "kind": "rectify"},
            "unsupported kind 'rectify' (expected one of ('erase',))",
        ),
        (
            {"request_id": "r1", "subject_id": "u1", "requested_at": "soon"},
            "bad time 'soon': not RFC 3339 or epoch millis",
        ),
        ({"request_id": "r1", "subject_id": "u1", "requested_at": -1}, "bad time -1"),
        (
            {"request_id": "r1", "subject_id": "u1", "requested_at": 0, "aliases": [1]},
            "aliases must be non-empty strings",
        ),
        (
            {"request_id": "r1", "subject_id": "u1", "requested_at": 0, "aliases": [""]},
            "aliases must be non-empty strings",
        ),
    ],
)
def test_from_dict_rejects_with_exact_reason(obj, reason):
    with pytest.raises(ValueError) as info:
        ErasureRequest.from_dict(obj)
    assert str(info.value) == reason


def test_to_dict_round_trips_through_from_dict():
    request = ErasureRequest("r9", "u9", T0 + 123, regulation="ccpa", aliases=("a@x", "dev"))
    as_dict = request.to_dict()
    assert as_dict == {
        "request_id": "r9",
        "subject_id": "u9",
        "aliases": ["a@x", "dev"],
        "requested_at": "2026-01-01T00:00:00.123Z",
        "regulation": "ccpa",
        "kind": "erase",
    }
    assert ErasureRequest.from_dict(json.loads(json.dumps(as_dict))) == request


# --- deadlines -----------------------------------------------------------------------------


def test_deadlines_gdpr_30_days_ccpa_45_days():
    assert deadline_ms("gdpr", T0) == T0 + 30 * DAY_MS
    assert deadline_ms("ccpa", T0) == T0 + 45 * DAY_MS
    assert ErasureRequest("r", "u", 1000).deadline_ms == 1000 + 2_592_000_000
    assert ErasureRequest("r", "u", 1000, regulation="ccpa").deadline_ms == 1000 + 3_888_000_000


# --- DeadLetter.to_json ----------------------------------------------------------------------


def test_dead_letter_json_with_utf8_raw():
    letter = DeadLetter("sessions", "f.jsonl", "f.jsonl@10", "missing user_id", '{"action":"é"}'.encode())
    assert json.loads(letter.to_json()) == {
        "stream": "sessions",
        "source": "f.jsonl",
        "position": "f.jsonl@10",
        "reason": "missing user_id",
        "raw": '{"action":"é"}',
        "raw_base64": None,
    }
    # Keys are sorted: the line is stable byte for byte.
    assert letter.to_json().startswith('{"position": "f.jsonl@10", "raw": ')


def test_dead_letter_json_with_invalid_utf8_raw_is_base64():
    raw = b'{"user_id": "u5\xff\xfe"}'
    letter = DeadLetter("requests", "s", "shard-1:7", "bad UTF-8 at byte 15", raw)
    decoded = json.loads(letter.to_json())
    assert decoded["raw"] is None
    assert decoded["raw_base64"] == base64.b64encode(raw).decode("ascii")
    assert base64.b64decode(decoded["raw_base64"]) == raw
    assert (decoded["stream"], decoded["position"], decoded["reason"]) == (
        "requests",
        "shard-1:7",
        "bad UTF-8 at byte 15",
    )
