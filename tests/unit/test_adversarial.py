"""Every case of tests/adversarial.py through the parsers and the file reader: exact dead letters, nothing lost.

Inputs that once crashed the process in pyarrow's native reader are parsed in a
subprocess, so a regression fails a test instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from beam_rtbf.parse.lines import MAX_NESTING_DEPTH, json_depth, native_json_safe
from beam_rtbf.parse.request_events import parse_request_chunk
from beam_rtbf.parse.session_batch import parse_session_chunk
from beam_rtbf.records import RawBatch
from beam_rtbf.sources.files import read_range
from tests import adversarial as adv

ARRIVAL = 1_800_000_000_000
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _good(i: int) -> bytes:
    return b'{"user_id":"g%d","action":"show","secs_elapsed":%d}' % (i, i)


def _chunk_around(hostile: bytes, position: str, n_good: int = 200) -> tuple[bytes, int]:
    """``n_good`` good lines with the hostile line first, in the middle or last; (data, its byte offset)."""
    lines = [_good(i) for i in range(n_good)]
    at = {"first": 0, "middle": n_good // 2, "last": n_good}[position]
    lines.insert(at, hostile)
    return b"\n".join(lines) + b"\n", sum(len(line) + 1 for line in lines[:at])


def _check_sessions(case: adv.Hostile, position: str) -> None:
    data, offset = _chunk_around(case.raw, position)
    parsed = parse_session_chunk(RawBatch("adv", "jsonl", data, 0, None, ARRIVAL))
    assert parsed.records_in == 201 == parsed.batch.num_rows + len(parsed.dead_letters)
    ids = parsed.batch.column("user_id").to_pylist()
    assert [i for i in ids if i.startswith("g")] == [f"g{i}" for i in range(200)]  # no good row lost
    if case.reason is None:
        assert parsed.dead_letters == [] and parsed.batch.num_rows == 201
    else:
        [letter] = parsed.dead_letters
        assert case.reason in letter.reason
        assert (letter.position, letter.raw, letter.stream) == (f"adv@{offset}", case.raw, "sessions")


SAFE_SESSION_CASES = [c for c in adv.SESSION_JSONL if not c.native_crash]
CRASH_SESSION_CASES = [c for c in adv.SESSION_JSONL if c.native_crash]


@pytest.mark.parametrize("position", ["first", "middle", "last"])
@pytest.mark.parametrize("case", SAFE_SESSION_CASES, ids=[c.name for c in SAFE_SESSION_CASES])
def test_hostile_session_line_in_a_large_chunk(case, position):
    _check_sessions(case, position)


@pytest.mark.parametrize("case", adv.SESSION_JSONL, ids=[c.name for c in adv.SESSION_JSONL])
def test_hostile_session_line_alone_takes_the_per_line_path(case):
    parsed = parse_session_chunk(RawBatch("adv", "jsonl", case.raw + b"\n", 0, None, ARRIVAL))
    assert parsed.records_in == 1
    if case.reason is None:
        assert parsed.batch.num_rows == 1 and parsed.dead_letters == []
    else:
        assert [case.reason in d.reason for d in parsed.dead_letters] == [True]


@pytest.mark.parametrize("n_good", [0, 200])
def test_a_key_named_twice_means_the_last_value_on_both_paths(n_good):
    [case] = [c for c in adv.SESSION_JSONL if c.name == "user_id named twice"]
    data, _ = _chunk_around(case.raw, "middle", n_good)
    parsed = parse_session_chunk(RawBatch("adv", "jsonl", data, 0, None, ARRIVAL))
    assert [u for u in parsed.batch.column("user_id").to_pylist() if not u.startswith("g")] == ["dup_last"]


_CRASH_SCRIPT = """
import sys
from tests import adversarial as adv
from tests.unit.test_adversarial import CRASH_SESSION_CASES, _check_sessions
for case in CRASH_SESSION_CASES:
    for position in ("first", "middle", "last"):
        _check_sessions(case, position)
        print("ok", case.name, position, flush=True)
"""


def test_inputs_that_crashed_the_native_reader_are_dead_letters_in_a_subprocess():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", _CRASH_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"exit {done.returncode} (139 = segfault)\n{done.stdout}\n{done.stderr[-3000:]}"
    assert done.stdout.count("ok ") == 3 * len(CRASH_SESSION_CASES)


_FUZZ_SCRIPT = """
import sys
from beam_rtbf.parse.session_batch import parse_session_chunk
from beam_rtbf.records import RawBatch
from tests.adversarial import mutated_chunks
for seed in (1, 2):
    for fmt in ("jsonl", "csv"):
        for data, header in mutated_chunks(seed, fmt, 100):
            parsed = parse_session_chunk(RawBatch("fuzz", fmt, data, 0, None, 1, has_header=header))
            assert parsed.records_in == parsed.batch.num_rows + len(parsed.dead_letters)
            assert parsed.records_in == sum(1 for line in data.split(b"\\n") if line.strip()) - header
print("fuzz ok")
"""


@pytest.mark.slow
def test_seeded_mutations_never_crash_and_every_line_is_accounted_for():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", _FUZZ_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"exit {done.returncode} (139 = segfault)\n{done.stderr[-3000:]}"
    assert "fuzz ok" in done.stdout


def test_prescreen_keeps_nested_and_non_object_lines_from_the_native_reader():
    lines = [_good(0), b"null", b"[" * 65, b'{"a":' + b"[" * 70 + b"}", b' {"user_id":"x"}', b"", _good(1) + b"\r"]
    data = b"\n".join(lines) + b"\n"
    from beam_rtbf.parse.lines import line_bounds

    starts, ends = line_bounds(data)
    assert native_json_safe(data, starts, ends).tolist() == [True, False, False, False, False, False, True]


def test_json_depth_ignores_brackets_in_strings():
    assert json_depth(b'{"a":"[[[[{{{{","b":[[1]]}') == 3
    assert json_depth(b'{"a":"\\"[[[","b":1}') == 1
    assert json_depth(b"[" * (MAX_NESTING_DEPTH + 1)) == MAX_NESTING_DEPTH + 1


# --- requests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", adv.REQUEST_JSONL, ids=[c.name for c in adv.REQUEST_JSONL])
def test_hostile_request_line(case):
    good = json.dumps({"request_id": "good", "subject_id": "s", "requested_at": 1}).encode()
    data = good + b"\n" + case.raw + b"\n" + good.replace(b"good", b"good2") + b"\n"
    parsed = parse_request_chunk(RawBatch("req", "jsonl", data, 10, None, ARRIVAL))
    assert parsed.records_in == 3 and parsed.ignored == 0
    ids = [r.request_id for r in parsed.requests]
    if case.reason is None:
        assert parsed.dead_letters == [] and len(ids) == 3
    else:
        assert ids == ["good", "good2"]
        [letter] = parsed.dead_letters
        assert case.reason in letter.reason
        assert (letter.position, letter.raw) == (f"req@{10 + len(good) + 1}", case.raw)


def test_request_without_requested_at_is_dated_by_arrival_and_trimmed_id_kept():
    data = b"\n".join(c.raw for c in adv.REQUEST_JSONL if c.reason is None) + b"\n"
    parsed = parse_request_chunk(RawBatch("req", "jsonl", data, 0, None, ARRIVAL))
    by_id = {r.request_id: r for r in parsed.requests}
    assert by_id["r-no-time"].requested_at_ms == ARRIVAL
    assert "r" * 128 in by_id


# --- CSV headers ----------------------------------------------------------------------------------------


def _read_file(tmp_path, name: str, content: bytes, chunk_bytes: int = 1 << 20):
    path = tmp_path / name
    path.write_bytes(content)
    fmt = "tsv" if ".tsv" in name else "csv" if ".csv" in name else "jsonl"
    parsed = [parse_session_chunk(raw) for raw in read_range(str(path), fmt, 0, -1, chunk_bytes)]
    rows = [row for p in parsed for row in p.batch.to_pylist()]
    dead = [d for p in parsed for d in p.dead_letters]
    assert sum(p.records_in for p in parsed) == len(rows) + len(dead)
    return rows, dead, sum(p.records_in for p in parsed)


def _subset(row: dict, keys) -> dict:
    return {k: row[k] for k in keys}


@pytest.mark.parametrize("name", ["reordered.csv", "reordered.tsv"])
def test_csv_header_in_another_order_maps_columns_by_name(tmp_path, name):
    content = adv.CSV_REORDERED if name.endswith(".csv") else adv.CSV_REORDERED.replace(b",", b"\t")
    rows, dead, records_in = _read_file(tmp_path, name, content)
    assert (records_in, dead) == (2, [])
    assert [_subset(r, e) for r, e in zip(rows, adv.CSV_REORDERED_ROWS)] == adv.CSV_REORDERED_ROWS
    assert rows[1]["secs_elapsed"] is None and rows[1]["action_detail"] == "-unknown-"


def test_csv_header_columns_reach_every_range_of_a_large_file(tmp_path):
    header, body = adv.CSV_REORDERED.split(b"\n", 1)
    row = b"iPhone,1.5,u_big,view,show,p3\n"
    rows, dead, records_in = _read_file(tmp_path, "big.csv", header + b"\n" + row * 3000, chunk_bytes=4096)
    assert (records_in, dead) == (3000, [])
    assert {(r["user_id"], r["action"], r["device_type"], r["secs_elapsed"]) for r in rows} == {
        ("u_big", "show", "iPhone", 1.5)
    }
    # A byte range that starts mid-file (another worker's share) maps by the file's header too.
    path = str(tmp_path / "big.csv")
    size = os.path.getsize(path)
    ranged = [
        parse_session_chunk(raw)
        for start, end in ((0, size // 2), (size // 2, size))
        for raw in read_range(path, "csv", start, end, 4096)
    ]
    assert sum(p.batch.num_rows for p in ranged) == 3000 and not any(p.dead_letters for p in ranged)
    assert {r["device_type"] for p in ranged for r in p.batch.to_pylist()} == {"iPhone"}


def test_headerless_csv_whose_first_user_id_starts_with_user_id_is_all_data(tmp_path):
    rows, dead, records_in = _read_file(tmp_path, "h.csv", adv.CSV_HEADERLESS_USER_ID_PREFIX)
    assert (records_in, dead) == (2, [])
    assert [r["user_id"] for r in rows] == ["user_id_7", "user_id_8"]


def test_csv_optional_columns_by_header(tmp_path):
    rows, dead, _ = _read_file(tmp_path, "o.csv", adv.CSV_OPTIONAL_COLUMNS)
    assert dead == []
    assert _subset(rows[0], ["user_id", "event_time_ms", "event_id", "email", "device_id", "action"]) == {
        "user_id": "u_opt",
        "event_time_ms": 1_767_225_601_000,
        "event_id": "e1",
        "email": "a@example.com",
        "device_id": "dev-1",
        "action": "show",
    }


def test_csv_header_with_an_unknown_column_is_not_a_header_and_rows_are_dead_letters(tmp_path):
    rows, dead, records_in = _read_file(tmp_path, "u.csv", adv.CSV_UNKNOWN_COLUMN)
    assert (records_in, rows) == (2, [])
    assert [d.reason for d in dead] == [adv.CSV_UNKNOWN_COLUMN_REASON] * 2


# --- compressed files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", adv.COMPRESSIONS)
def test_truncated_compressed_file_is_a_dead_letter_and_earlier_lines_count(tmp_path, kind):
    packed, text = adv.truncated(kind)
    name = f"t.jsonl.{kind}"
    rows, dead, records_in = _read_file(tmp_path, name, packed, chunk_bytes=8192)
    [letter] = dead
    path = str(tmp_path / name)
    assert letter.reason.startswith(f"{adv.TRUNCATED_REASON}: {path} ends at decompressed offset ")
    cut = int(letter.reason.rsplit(" ", 1)[1])
    assert 0 < cut < len(text)
    whole_lines = text[:cut].count(b"\n")
    assert len(rows) == whole_lines and records_in == whole_lines + 1
    line_start = text.rfind(b"\n", 0, cut) + 1
    assert letter.position == f"{path}@{line_start}"
    assert letter.raw == text[line_start:cut]  # the cut-off line, never parsed as data


def test_gzip_with_trailing_garbage_is_a_corrupt_file_dead_letter(tmp_path):
    rows, dead, _ = _read_file(tmp_path, "g.jsonl.gz", adv.gzip_then_garbage())
    assert len(rows) == 1000
    assert [d.reason.split(":")[0] for d in dead] == [adv.CORRUPT_REASON]


@pytest.mark.parametrize("kind", adv.COMPRESSIONS)
def test_whole_compressed_file_reads_every_line(tmp_path, kind):
    rows, dead, _ = _read_file(tmp_path, f"w.jsonl.{kind}", adv.compress(kind, adv.jsonl_sessions(5000)))
    assert (len(rows), dead) == (5000, [])


def test_concatenated_gzip_members_read_every_line(tmp_path):
    rows, dead, _ = _read_file(tmp_path, "w.jsonl.gz", adv.compress("gz", adv.jsonl_sessions(5000)) * 2)
    assert (len(rows), dead) == (10_000, [])


# --- the whole run, through the command line -------------------------------------------------------------

_CLI_SCRIPT = """
import sys
from beam_rtbf.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_every_hostile_input_through_the_cli_gives_exact_summary_counts(tmp_path):
    """All hostile session and request inputs in one run (in a subprocess: a native crash fails the test)."""
    import zlib

    data = tmp_path / "in"
    data.mkdir()
    good = [_good(i) for i in range(300)]
    (data / "sessions.jsonl").write_bytes(b"\n".join(good + [c.raw for c in adv.SESSION_JSONL]) + b"\n")
    (data / "sessions-reordered.csv").write_bytes(adv.CSV_REORDERED)
    (data / "sessions-headerless.csv").write_bytes(adv.CSV_HEADERLESS_USER_ID_PREFIX)
    (data / "sessions-unknown-column.csv").write_bytes(adv.CSV_UNKNOWN_COLUMN)
    packed, _ = adv.truncated_gzip()
    (data / "sessions-truncated.jsonl.gz").write_bytes(packed)
    recoverable = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(packed).count(b"\n")
    forget_g1 = json.dumps({"request_id": "forget-g1", "subject_id": "g1", "requested_at": 1}).encode()
    (data / "requests.jsonl").write_bytes(b"\n".join([forget_g1] + [c.raw for c in adv.REQUEST_JSONL]) + b"\n")
    out = tmp_path / "out"
    argv = [
        "run",
        "--sessions",
        f"file://{data}/sessions*",
        "--requests",
        f"file://{data}/requests.jsonl",
        f"--output={out}",
        f"--registry=embedded://{tmp_path}/reg.sqlite",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", _CLI_SCRIPT, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (
        f"exit {done.returncode} (139 = segfault)\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
    summary = json.loads((out / "summary.json").read_text())

    jsonl_clean = 300 + sum(c.reason is None for c in adv.SESSION_JSONL)
    jsonl_dead = sum(c.reason is not None for c in adv.SESSION_JSONL)
    csv_clean = 2 + 2  # reordered header, headerless rows
    csv_dead = 2  # the unknown-column file: its header line and its row
    expected_in = jsonl_clean + jsonl_dead + csv_clean + csv_dead + recoverable + 1
    assert {k: summary[k] for k in ("sessions_in", "clean", "suppressed", "dead_lettered", "conservation_ok")} == {
        "sessions_in": expected_in,
        "clean": jsonl_clean + csv_clean + recoverable - 1,  # g1 is forgotten
        "suppressed": 1,
        "dead_lettered": jsonl_dead + csv_dead + 1,
        "conservation_ok": True,
    }
    assert (summary["requests_in"], summary["requests_accepted"], summary["requests_dead_lettered"]) == (
        1 + len(adv.REQUEST_JSONL),
        1 + sum(c.reason is None for c in adv.REQUEST_JSONL),
        sum(c.reason is not None for c in adv.REQUEST_JSONL),
    )
    letters = [json.loads(line) for f in (out / "deadletter").rglob("*.jsonl") for line in f.read_text().splitlines()]
    reasons = sorted(letter["reason"] for letter in letters)
    for case in adv.SESSION_JSONL + adv.REQUEST_JSONL:
        if case.reason is not None:
            assert any(case.reason in r for r in reasons), case.name
    assert sum(r.startswith(adv.TRUNCATED_REASON) for r in reasons) == 1
    assert all(letter["position"] for letter in letters)
