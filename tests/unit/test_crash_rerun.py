"""A bounded ``beam-rtbf run`` killed (kill -9) at any moment and re-run archives each session once.

Real crashes: the CLI runs as a subprocess and is killed with SIGKILL when the output
shows it reached a moment (run recorded, first archive file staged, publishing,
committed). The re-run of the same command must end in the output a clean run
writes: the same archived events, index, analytics and dead letters, counted once.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

REPO = str(Path(__file__).resolve().parents[2])
SESSIONS, USERS, REQUESTS = 200_000, 5_000, 20


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [env.get("PYTHONPATH")])])
    return env


def _command(data: Path, out: Path, registry: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "beam_rtbf.cli",
        "run",
        "--sessions",
        f"file://{data}/sessions-*.jsonl",
        "--requests",
        f"file://{data}/requests.jsonl",
        "--output",
        str(out),
        "--registry",
        f"embedded://{registry}",
        *extra,
    ]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _run_and_kill(command: list[str], moment: Callable[[], bool], timeout_s: float = 600) -> bool:
    """Start the run and kill -9 it as soon as ``moment()`` holds; False if it finished first."""
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None:
            if moment():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            assert time.monotonic() < deadline, "the run neither finished nor reached the moment"
            time.sleep(0.002)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _states(out: Path) -> list[str]:
    states = []
    for path in glob.glob(str(out / "_runs" / "r*.json")):
        try:
            with open(path, encoding="utf-8") as handle:
                states.append(json.load(handle)["state"])
        except (OSError, ValueError, KeyError):
            continue  # replaced while read
    return states


def run_recorded(out: Path) -> Callable[[], bool]:
    return lambda: "running" in _states(out)


def archive_file_staged(out: Path) -> Callable[[], bool]:
    return lambda: bool(glob.glob(str(out / "archive" / "_staging" / "*" / "dt=*" / "**" / "part-*.parquet")))


def publishing(out: Path) -> Callable[[], bool]:
    return lambda: "publishing" in _states(out)


def committed(out: Path) -> Callable[[], bool]:
    return lambda: "committed" in _states(out)


def _events(out: Path) -> collections.Counter:
    """The multiset of archived (user_id, event_time_ms, action), from the published files only."""
    counter: collections.Counter = collections.Counter()
    for path in glob.glob(str(out / "archive" / "dt=*" / "**" / "*.parquet"), recursive=True):
        table = pq.read_table(path, columns=["user_id", "event_time_ms", "action"])
        counter.update(zip(*(table.column(c).to_pylist() for c in ("user_id", "event_time_ms", "action"))))
    return counter


def _read_output(out: Path) -> dict:
    leftovers = [
        os.path.join(d, f)
        for d, _, names in os.walk(out)
        for f in names
        if f.startswith(".tmp-") or f"{os.sep}_staging{os.sep}" in os.path.join(d, f)
    ]
    index_records, index_paths = 0, set()
    for path in glob.glob(str(out / "archive" / "_index" / "*.parquet")):
        table = pq.read_table(path)
        users = table.filter(pc.equal(table.column("id_kind"), "user_id"))
        index_records += pc.sum(users.column("records")).as_py() or 0
        index_paths.update(table.column("path").to_pylist())
    analytics_sessions = 0
    for path in glob.glob(str(out / "analytics" / "dt=*" / "hour=*" / "*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            analytics_sessions += sum(json.loads(line)["sessions"] for line in handle)
    dead = 0
    for path in glob.glob(str(out / "deadletter" / "*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            dead += sum(1 for _ in handle)
    with open(out / "summary.json", encoding="utf-8") as handle:
        summary = json.load(handle)
    events = _events(out)
    return {
        "leftovers": leftovers,
        "archive_records": sum(events.values()),
        "events": events,
        "index_records": index_records,
        # Index rows name files relative to the archive root.
        "index_paths_missing": sorted(p for p in index_paths if not (out / "archive" / p).is_file()),
        "analytics_sessions": analytics_sessions,
        "dead_letters": dead,
        "summary": summary,
    }


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """Generated input files and the output of one uninterrupted run of them."""
    base = tmp_path_factory.mktemp("crash")
    data = base / "data"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_rtbf.cli",
            "generate",
            "--out",
            str(data),
            "--sessions",
            str(SESSIONS),
            "--users",
            str(USERS),
            "--requests",
            str(REQUESTS),
            "--bad-rate",
            "0.001",
        ],
        env=_env(),
        check=True,
        capture_output=True,
        timeout=600,
    )
    reference = base / "reference"
    _run(_command(data, reference, base / "reference.sqlite"))
    output = _read_output(reference)
    s = output["summary"]
    assert s["conservation_ok"] and s["suppressed"] > 0 and s["dead_lettered"] > 0
    assert output["archive_records"] == s["clean"] == s["sessions_in"] - s["suppressed"] - s["dead_lettered"]
    return data, output


def _assert_same_as_clean_run(out: Path, reference: dict) -> dict:
    got = _read_output(out)
    ref = reference["summary"]
    assert got["leftovers"] == []
    assert got["archive_records"] == ref["clean"] == ref["sessions_in"] - ref["suppressed"] - ref["dead_lettered"]
    assert got["index_records"] == got["archive_records"]
    assert got["index_paths_missing"] == []
    assert got["analytics_sessions"] == got["archive_records"]
    assert got["dead_letters"] == ref["dead_lettered"]
    assert got["events"] == reference["events"]  # each input event archived exactly once
    s = got["summary"]
    assert s["conservation_ok"] and (s["clean"], s["suppressed"], s["dead_lettered"]) == (
        ref["clean"],
        ref["suppressed"],
        ref["dead_lettered"],
    )
    return got


def test_killed_while_running_then_rerun_archives_each_session_once(clean_run, tmp_path):
    """Killed right after the run was recorded, then after its first archive file, then while publishing."""
    data, reference = clean_run
    out, registry = tmp_path / "out", tmp_path / "registry.sqlite"
    command = _command(data, out, registry)

    assert _run_and_kill(command, run_recorded(out))
    assert _run_and_kill(command, archive_file_staged(out))
    assert glob.glob(str(out / "archive" / "_staging" / "*" / "**" / "*.parquet"), recursive=True)
    assert not glob.glob(str(out / "archive" / "dt=*")), "a dead run's files must not be visible"
    # Best effort: the publish (a few dozen renames) may be over before a poll sees it.
    interrupted = _run_and_kill(command, publishing(out)) and "publishing" in _states(out)
    final = _run(command)

    _assert_same_as_clean_run(out, reference)
    records = [json.loads(Path(p).read_text()) for p in glob.glob(str(out / "_runs" / "r*.json"))]
    states = [r["state"] for r in records]
    assert states.count("committed") == 1 and states.count("abandoned") == 2
    if interrupted:  # the re-run finished the dead run's publish, then had nothing left to do
        assert [r for r in records if r.get("resumed_publish")] and "already committed" in final.stdout


def test_killed_right_after_the_commit_then_rerun_is_a_no_op_and_append_adds(clean_run, tmp_path):
    """A kill right after the commit (before summary.json): the re-run changes nothing; --append adds."""
    data, reference = clean_run
    out, registry = tmp_path / "out", tmp_path / "registry.sqlite"
    command = _command(data, out, registry)

    killed = _run_and_kill(command, committed(out))
    rerun = _run(command)
    if killed:  # the run had committed: the re-run has nothing to do
        assert "already committed" in rerun.stdout
    _assert_same_as_clean_run(out, reference)

    again = _run(command)
    assert "already committed" in again.stdout and "--append" in again.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["already_committed"] == summary["run_id"] and summary["clean"] == reference["summary"]["clean"]
    _assert_same_as_clean_run(out, reference)

    _run([*command, "--append"])
    got = _read_output(out)
    assert got["leftovers"] == []
    assert (
        got["archive_records"] == got["index_records"] == got["analytics_sessions"] == 2 * reference["summary"]["clean"]
    )
    assert got["events"] == reference["events"] + reference["events"]
    assert got["summary"]["appended"] is True and got["summary"]["clean"] == reference["summary"]["clean"]
