"""Attempts to break the Guarantees (README) through the CLI, on real files.

Each test is one break found by an adversarial review: the smallest input that made a
receipt say ``verified`` while the subject's data stayed, or made a run lose or double
sessions. They assert exact outcomes read back from disk.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_rtbf.cli import main
from beam_rtbf.sinks.ledger import RunLedger

pytestmark = [pytest.mark.slow]

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
GUARD = ["--max_total_share=1", "--max_partition_share=1"]  # tiny archives: the subject is a large share


@pytest.fixture(autouse=True)
def _hash_key(monkeypatch):
    monkeypatch.setenv("RTBF_SUBJECT_HASH_KEY", "test-key")


def _run(sessions: Path, out: Path, *extra: str) -> int:
    requests = sessions.parent / "no-requests.jsonl"
    if not requests.exists():  # written once: a new mtime would make the same input a new one
        requests.write_text("")
    return main(["run", f"--sessions=file://{sessions}", f"--requests=file://{requests}", f"--output={out}", *extra])


def _dead_letter_raws(out: Path) -> list[str]:
    return sorted(
        json.loads(line)["raw"]
        for path in (out / "deadletter").rglob("*.jsonl")
        for line in path.read_text().splitlines()
        if line.strip()
    )


def _receipt_status(out: Path) -> list[str]:
    return sorted(json.loads(p.read_text())["status"] for p in (out / "receipts").glob("*.json"))


def test_csv_dead_letter_is_matched_by_its_header_names_not_the_airbnb_layout(tmp_path):
    """A CSV file whose header puts user_id/email elsewhere than first: the subject's rejected
    row was read in the Airbnb layout (its first field, here the event time, taken for the user
    id), so it survived a purge whose receipt said verified."""
    sessions = tmp_path / "s.csv"
    sessions.write_text(
        "event_time,user_id,email,action_type,device_type,secs_elapsed\n"
        f"{T0},x9,Alice@Example.com,view,Mac,bad\n"  # the subject's, rejected (by e-mail)
        f"{T0},victim,v@ex.com,view,Mac,bad\n"  # the subject's, rejected (by user id)
        f"{T0},x10,bob@ex.com,view,Mac,3.0\n"
        f"{T0},x11,carol@ex.com,view,Mac,nope\n"  # someone else's, rejected
    )
    out = tmp_path / "out"
    assert _run(sessions, out) == 0
    assert len(_dead_letter_raws(out)) == 3
    assert main(["forget", "alice@example.com", "--output", str(out), "--request-id", "r-mail"]) == 0
    assert main(["forget", "victim", "--output", str(out), "--request-id", "r-user"]) == 0
    assert main(["purge", f"--output={out}", *GUARD]) == 0
    assert _receipt_status(out) == ["verified", "verified"]
    assert _dead_letter_raws(out) == [f"{T0},x11,carol@ex.com,view,Mac,nope"]


def test_cut_off_json_dead_letter_with_unicode_escapes_is_the_subjects(tmp_path):
    """An ASCII-only JSON encoder writes josé as jos\\u00e9 (and may escape @): a cut-off line
    is matched by raw tokens, which looked for the literal text only, so it stayed."""
    sessions = tmp_path / "s.jsonl"
    sessions.write_text(
        '{"user_id":"jos\\u00e9","event_time":1767225600000,"action":"a"\n'
        '{"user_id":"x1","email":"bob\\u0040ex.com","event_time":1767225600000,\n'
        '{"user_id":"x2","email":"carol\\u0040ex.com","event_time":1767225600000,\n'
        '{"user_id":"u5","event_time":1767225600000,"action":"a","action_type":"view","secs_elapsed":1.0}\n'
    )
    out = tmp_path / "out"
    assert _run(sessions, out) == 0
    assert len(_dead_letter_raws(out)) == 3
    assert main(["forget", "jos\u00e9", "--alias", "Bob@Ex.com", "--output", str(out), "--request-id", "r1"]) == 0
    assert main(["purge", f"--output={out}", *GUARD]) == 0
    assert _receipt_status(out) == ["verified"]
    assert _dead_letter_raws(out) == ['{"user_id":"x2","email":"carol\\u0040ex.com","event_time":1767225600000,']


def _archived_users(out: Path) -> list[str]:
    users: list[str] = []
    for path in sorted((out / "archive").glob("dt=*/**/*.parquet")):
        users += pq.read_table(path, columns=["user_id"]).column("user_id").to_pylist()
    return sorted(users)


def test_run_killed_while_publishing_then_moved_publishes_into_the_new_place(tmp_path, monkeypatch):
    """The run ledger stored its roots as absolute paths: after a run died while publishing and
    the output folder was moved, the re-run 'finished the publish' against the old location (which
    no longer existed), marked the run committed and deleted the staged files in the new one as
    orphans. The archive lost every session while summary.json still counted them."""
    sessions = tmp_path / "s.jsonl"
    sessions.write_text(
        "".join(
            json.dumps({"user_id": f"u{k % 7}", "event_time": T0 + k * 1000, "action": "a", "secs_elapsed": 1.0}) + "\n"
            for k in range(40)
        )
    )
    first = tmp_path / "first"

    class Killed(BaseException):
        """Not an error any layer handles: the process is gone (a SystemExit would become an exit code)."""

    def die(self, record):
        raise Killed  # the process dies after the ledger said "publishing", before any rename

    with monkeypatch.context() as patch:
        patch.setattr(RunLedger, "_publish_files", die)
        with pytest.raises(Killed):
            _run(sessions, first)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    assert _run(sessions, moved) == 0  # settles the interrupted publish; the input is then already committed
    summary = json.loads((moved / "summary.json").read_text())
    assert summary["clean"] == 40
    assert _archived_users(moved) == sorted(f"u{k % 7}" for k in range(40))
    assert not first.exists()


def test_erasure_api_url_credentials_reach_no_file_and_no_output(tmp_path, monkeypatch, capsys):
    """A password in the URL's user part and a token in its query were written verbatim into the
    receipt, the audit log and the API dead letter (the location ``api:<url>``)."""
    monkeypatch.setenv("RTBF_ERASURE_API_TOKEN", "bearer-not-in-files")
    sessions = tmp_path / "s.jsonl"
    sessions.write_text(json.dumps({"user_id": "u1", "event_time": T0, "action": "a"}) + "\n")
    out = tmp_path / "out"
    assert _run(sessions, out) == 0
    assert main(["forget", "u1", "--output", str(out), "--request-id", "r1"]) == 0
    url = "http://apiuser:hunter8pw@127.0.0.1:9/erase?token=hunter9tok&api_key=hunter10"  # port 9: refused
    code = main(["purge", f"--output={out}", *GUARD, f"--erasure_api_url={url}", "--erasure_api_max_attempts=1"])
    assert code == 1  # the API call failed: the request stays open
    printed = capsys.readouterr()
    texts = [printed.out, printed.err] + [
        p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.is_file() and p.suffix != ".parquet"
    ]
    leaks = [
        secret for secret in ("hunter8pw", "hunter9tok", "hunter10", "bearer-not-in-files") if secret in "".join(texts)
    ]
    assert leaks == []
    letters = [
        json.loads(line)
        for p in (out / "deadletter" / "erasure_api").glob("*.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert [letter["location"] for letter in letters] == [
        "api:http://apiuser:***@127.0.0.1:9/erase?token=***&api_key=***"
    ]


def test_lone_surrogate_escapes_are_dead_letters_not_a_crashed_run(tmp_path, capsys):
    """``"\\ud800"`` is valid JSON but not text: one such user id, subject id or alias crashed the
    whole run (Arrow and the registry refuse to encode it) instead of becoming a dead letter."""
    sessions = tmp_path / "s.jsonl"
    sessions.write_text(
        '{"user_id":"\\ud800","event_time":1767225600000}\n'
        '{"user_id":"ok","event_time":1767225600000,"email":"a\\udc00@ex.com"}\n'
        '{"user_id":"fine","event_time":1767225600000}\n'
    )
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        '{"request_id":"q1","subject_id":"\\ud800"}\n'
        '{"request_id":"q2","subject_id":"someone","aliases":["\\udc00"]}\n'
        '{"request_id":"q3","subject_id":"other"}\n'
    )
    out = tmp_path / "out"
    assert main(["run", f"--sessions=file://{sessions}", f"--requests=file://{requests}", f"--output={out}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    got = {
        k: summary[k] for k in ("sessions_in", "clean", "dead_lettered", "requests_accepted", "requests_dead_lettered")
    }
    assert got == {
        "sessions_in": 3,
        "clean": 1,
        "dead_lettered": 2,
        "requests_accepted": 1,
        "requests_dead_lettered": 2,
    }
    assert _archived_users(out) == ["fine"]
    capsys.readouterr()
    assert main(["forget", "ab\udcff", "--output", str(out)]) == 2  # undecodable argv bytes
    assert "lone surrogate" in capsys.readouterr().err
