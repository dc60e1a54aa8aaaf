"""Every hostile input found so far, in one place, with what must come out of it.

Tests import these lists; a new hostile input found later is added here and
every test that walks the lists covers it. Each case is the raw bytes and a
substring of the dead-letter reason it must produce (``None``: it is a valid
record and must come out clean). ``native_crash`` marks inputs that killed the
process through pyarrow's native reader before the pre-screen existed (tests
run those in a subprocess, so a regression fails the test instead of pytest).
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import json
import lzma

from beam_rtbf.sources.kpl import KPL_MAGIC, aggregate


@dataclasses.dataclass(frozen=True)
class Hostile:
    name: str
    raw: bytes
    reason: str | None  # substring of the dead letter's reason; None: must parse clean
    native_crash: bool = False


def _nested_array(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _nested_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


# --- sessions, JSON lines -------------------------------------------------------------------------

SESSION_JSONL: list[Hostile] = [
    Hostile("array nested 1,500 deep", _nested_array(1_500), "nesting too deep"),
    Hostile("array nested 20,000 deep", _nested_array(20_000), "nesting too deep", native_crash=True),
    Hostile(
        "field nested 6,000 deep in a valid session",
        b'{"user_id":"deep","x":' + _nested_array(6_000) + b"}",
        "nesting too deep",
        native_crash=True,
    ),
    Hostile("object nested 5,000 deep", _nested_object(5_000), "nesting too deep"),
    Hostile("field nested 65 deep", b'{"user_id":"u","x":' + _nested_array(64) + b"}", "nesting too deep"),
    Hostile("field nested 63 deep is fine", b'{"user_id":"ok63","x":' + _nested_array(62) + b"}", None),
    Hostile("brackets inside strings are not nesting", b'{"user_id":"br","action":"' + b"[{" * 200 + b'"}', None),
    Hostile("bare null", b"null", "JSON value is not an object", native_crash=True),
    Hostile("null with leading spaces", b"   null", "JSON value is not an object", native_crash=True),
    Hostile("null before an object", b'null {"user_id":"x"}', "malformed JSON", native_crash=True),
    Hostile("object then null", b'{"user_id":"x"} null', "malformed JSON"),
    Hostile("two objects on one line", b'{"user_id":"x"} {"user_id":"y"}', "malformed JSON"),
    # Parsers disagree in general; ours agree: the last one wins on both paths (Python's json and pyarrow).
    Hostile("user_id named twice", b'{"user_id":"first","user_id":"dup_last"}', None),
    Hostile("number", b"42", "JSON value is not an object"),
    Hostile("string", b'"user_id"', "JSON value is not an object"),
    Hostile("array of sessions", b'[{"user_id":"x"}]', "JSON value is not an object"),
    Hostile("truncated object", b'{"user_id":"x","action":', "malformed JSON"),
    Hostile("bad UTF-8", b'{"user_id":"\xff\xfe"}', "bad UTF-8"),
    Hostile("user_id null", b'{"user_id":null}', "missing user_id"),
    Hostile("user_id an object", b'{"user_id":{"id":1}}', "user_id is not a string"),
    Hostile("NaN secs", b'{"user_id":"x","secs_elapsed":NaN}', "secs_elapsed"),
    Hostile("event_time far future", b'{"user_id":"x","event_time":1e30}', "bad event_time"),
]

# --- sessions, CSV (whole files: the header matters) ---------------------------------------------------

CSV_REORDERED = (
    b"device_type,secs_elapsed,user_id,action_type,action,action_detail\n"
    b"iPhone,12.5,u_reordered_1,view,show,p3\n"
    b"Mac Desktop,,u_reordered_2,click,search,-unknown-\n"
)
CSV_REORDERED_ROWS = [
    {
        "user_id": "u_reordered_1",
        "action": "show",
        "action_type": "view",
        "device_type": "iPhone",
        "secs_elapsed": 12.5,
    },
    {"user_id": "u_reordered_2", "action": "search", "action_type": "click", "device_type": "Mac Desktop"},
]
# No header: the first user id merely starts with "user_id"; it is a data row and must be counted.
CSV_HEADERLESS_USER_ID_PREFIX = b"user_id_7,show,view,p3,iPhone,1\nuser_id_8,show,view,p3,iPhone,2\n"
CSV_OPTIONAL_COLUMNS = (
    b"user_id,event_time,event_id,email,device_id,action\nu_opt,2026-01-01T00:00:01Z,e1,a@example.com,dev-1,show\n"
)
# A header-like first line with a column we do not know is not a header: every row is malformed (loud, never
# silently mapped wrong).
CSV_UNKNOWN_COLUMN = b"user_id,action,country\nu1,show,FR\n"
CSV_UNKNOWN_COLUMN_REASON = "malformed record: 3 fields, expected 6"

# --- requests, JSON lines ----------------------------------------------------------------------------

REQUEST_JSONL: list[Hostile] = [
    Hostile("request nested 20,000 deep", b'{"request_id":"r","x":' + _nested_array(20_000) + b"}", "nesting too deep"),
    Hostile("request array 1,500 deep", _nested_array(1_500), "nesting too deep"),
    Hostile("request null", b"null", "JSON value is not an object"),
    Hostile(
        "request_id of 129 characters",
        json.dumps({"request_id": "r" * 129, "subject_id": "u"}).encode(),
        "request_id longer than 128 characters",
    ),
    Hostile(
        "request_id of 128 characters after trim is fine",
        json.dumps({"request_id": "  " + "r" * 128 + " ", "subject_id": "u_r128"}).encode(),
        None,
    ),
    Hostile(
        "request_id with NUL", json.dumps({"request_id": "r\u0000x", "subject_id": "u"}).encode(), "U+0000 at index 1"
    ),
    Hostile(
        "request_id with a newline", json.dumps({"request_id": "r\nx", "subject_id": "u"}).encode(), "U+000A at index 1"
    ),
    Hostile(
        "request_id with a bidi override",
        json.dumps({"request_id": "r\u202ex", "subject_id": "u"}).encode(),
        "U+202E at index 1",
    ),
    Hostile(
        "request_id with a lone surrogate",
        b'{"request_id":"r\\ud800","subject_id":"u"}',
        "U+D800 at index 1",
    ),
    Hostile(
        "request without requested_at is dated by its arrival",
        json.dumps({"request_id": "r-no-time", "subject_id": "u_no_time"}).encode(),
        None,
    ),
]

# --- compressed files --------------------------------------------------------------------------------


def jsonl_sessions(n: int, prefix: str = "gz") -> bytes:
    return b"".join(b'{"user_id":"%s%d","action":"show"}\n' % (prefix.encode(), i) for i in range(n))


def compress(kind: str, text: bytes) -> bytes:
    if kind == "gz":
        return gzip.compress(text)
    if kind == "bz2":
        return bz2.compress(text, compresslevel=1)  # 100 KB blocks: a cut file still has whole blocks
    if kind == "xz":
        return lzma.compress(text)
    if kind == "zst":
        import zstandard

        return zstandard.ZstdCompressor().compress(text)
    raise ValueError(kind)


COMPRESSIONS = ("gz", "bz2", "xz", "zst")


def truncated(kind: str, n: int = 20_000) -> tuple[bytes, bytes]:
    """(compressed bytes cut in half, the full decompressed text)."""
    text = jsonl_sessions(n, kind)
    packed = compress(kind, text)
    return packed[: len(packed) // 2], text


def truncated_gzip(n: int = 20_000) -> tuple[bytes, bytes]:
    return truncated("gz", n)


def gzip_then_garbage(n: int = 1_000) -> bytes:
    """A whole gzip member followed by bytes that are not one: the tail is corrupt."""
    return gzip.compress(jsonl_sessions(n)) + b"this is not gzip"


TRUNCATED_REASON = "truncated compressed file"
CORRUPT_REASON = "corrupt compressed file"

# --- KPL aggregated Kinesis records ------------------------------------------------------------------


def kpl_bad_md5() -> bytes:
    good = aggregate([("k", b'{"user_id":"kpl"}')])
    return good[:-1] + bytes([good[-1] ^ 0xFF])


def kpl_bad_protobuf() -> bytes:
    body = b"\x1a\xff\xff\xff\x0f"  # field 3, length 2^32-1: runs past the end
    return KPL_MAGIC + body + hashlib.md5(body).digest()


def kpl_bad_key_index() -> bytes:
    body = b"\x0a\x01k" + b"\x1a\x05\x08\x07\x1a\x01x"  # one key; the record names key 7
    return KPL_MAGIC + body + hashlib.md5(body).digest()


KPL_CORRUPT: list[Hostile] = [
    Hostile("KPL aggregate with a bad MD5", kpl_bad_md5(), "MD5 checksum mismatch"),
    Hostile("KPL aggregate with a field past the end", kpl_bad_protobuf(), "field runs past the end"),
    Hostile("KPL aggregate naming a missing partition key", kpl_bad_key_index(), "names partition key 7 of 1"),
    Hostile("KPL magic alone", KPL_MAGIC, "shorter than magic and checksum"),
]

# --- seeded mutations (a small fuzzer: what it finds gets a named case above) ------------------------------

_ATOMS = [b"null", b"[", b"]", b"{", b"}", b'"', b",", b":", b"\\", b"\x00", b"\xff", b"\r", b"\t", b"1e999", b"NaN"]
_ATOMS += [b"-", b"true", b" ", b"\xc3", b"\xed\xa0\x80", b'"user_id"', b"[" * 5_000, b"{" * 3_000]


def mutated_chunks(seed: int, fmt: str, count: int):
    """``count`` (data, has_header) chunks of good lines with a few lines mangled by byte-level edits."""
    import random

    rng = random.Random(seed)
    if fmt == "jsonl":
        base = b'{"user_id":"u%d","action":"show","secs_elapsed":%d,"event_time":1767225600000}'
    else:
        base = b"u%d,show,view,p3,iPhone,%d"
    for _ in range(count):
        lines = [base % (i, i) for i in range(rng.choice([10, 100, 300]))]
        for _ in range(rng.randint(1, 5)):
            i = rng.randrange(len(lines))
            line = bytearray(lines[i])
            for _ in range(rng.randint(1, 6)):
                at, op = rng.randint(0, len(line)), rng.random()
                if op < 0.5:
                    line[at:at] = rng.choice(_ATOMS)
                elif op < 0.8:
                    del line[at : at + rng.randint(1, 10)]
                else:
                    line = bytearray(rng.choice(_ATOMS)) + line
            lines[i] = bytes(line)
        header = fmt != "jsonl" and rng.random() < 0.3
        head = b"user_id,action,action_type,action_detail,device_type,secs_elapsed\n" if header else b""
        yield head + b"\n".join(lines) + b"\n", header


# --- identifiers and request ids ----------------------------------------------------------------

# Request ids that once became file names: each must stay an opaque key, its manifest and receipt
# a plain file inside their folders, and its request purged like any other.
HOSTILE_REQUEST_IDS = (
    "../../x",
    "/tmp/rtbf-abs-escape",
    "a/b",
    ".tmp-x",
    "..",
    "CON",
    "x" * 100,
    "with space and \u00e9",
    "semi;colon|pipe*star?",
)

# name -> (canonical form, spellings of the same identifier); the last spelling is the one the
# erasure request uses. Every spelling must be filtered and purged as the canonical form.
SPELLINGS = {
    "email-case-and-padding": (
        "alice@example.com",
        ["Alice@Example.COM", " alice@example.com", "ALICE@EXAMPLE.COM\t", "alice@Example.com "],
    ),
    "unicode-nfd-vs-nfc": ("jos\u00e9", ["jose\u0301", "jos\u00e9", " jose\u0301"]),
    "zero-width": ("mallory", ["mal\u200blory", "\ufeffmallory", "mallory\u200d", "mallory"]),
}
