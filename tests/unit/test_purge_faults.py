"""purge/faults.py: named fault points, a no-op by default, reached by rewrite_file; nothing read from the environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_rtbf.purge import faults
from beam_rtbf.purge.rewrite import FileTask, read_journal, rewrite_file
from beam_rtbf.records import DeadLetter


class Recording:
    def __init__(self, fail_at: str | None = None) -> None:
        self.points: list[str] = []
        self.fail_at = fail_at

    def reached(self, point: str) -> None:
        self.points.append(point)
        if point == self.fail_at:
            raise RuntimeError(f"stopped at {point}")


def _dead_letters(tmp_path: Path) -> Path:
    records = [b'{"user_id":"alice","action":"x"', b'{"user_id":"bob","action":"y"', b'{"user_id":"alice","z":1']
    path = tmp_path / "deadletter" / "part-0.jsonl"
    path.parent.mkdir()
    path.write_text(
        "".join(DeadLetter("sessions", "f", f"f@{i}", "bad", r).to_json() + "\n" for i, r in enumerate(records))
    )
    return path


@pytest.fixture(autouse=True)
def _restore_installed():
    previous = faults.install(faults.NO_FAULTS)
    yield
    faults.install(previous)


def test_rewrite_reaches_before_and_after_replace_in_order(tmp_path):
    path = _dead_letters(tmp_path)
    seen = Recording()
    result = rewrite_file(FileTask("deadletter", str(path)), {"alice": ("req-a",)}, str(tmp_path / "j"), faults=seen)
    assert seen.points == ["before_replace", "after_replace"]
    assert (result.status, result.records_before, result.records_after, result.removed) == (
        "purged",
        3,
        1,
        {"req-a": 2},
    )
    assert [json.loads(line)["raw"] for line in path.read_text().splitlines()] == ['{"user_id":"bob","action":"y"']


def test_a_fault_before_replace_leaves_the_file_and_the_journal_says_what_it_will_lose(tmp_path):
    path = _dead_letters(tmp_path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="stopped at before_replace"):
        rewrite_file(
            FileTask("deadletter", str(path)),
            {"alice": ("req-a",)},
            str(tmp_path / "j"),
            faults=Recording(fail_at="before_replace"),
        )
    assert path.read_bytes() == before
    assert read_journal(str(tmp_path / "j"), str(path)) == {"req-a": 2}


def test_the_installed_fault_points_are_used_when_none_are_passed(tmp_path):
    path = _dead_letters(tmp_path)
    seen = Recording()
    assert faults.install(seen) is faults.NO_FAULTS
    assert faults.installed() is seen
    rewrite_file(FileTask("deadletter", str(path)), {"alice": ("req-a",)}, str(tmp_path / "j"))
    assert seen.points == ["before_replace", "after_replace"]


def test_the_environment_is_not_read(tmp_path, monkeypatch):
    # The variable that once made rewrite_file call os._exit: it must mean nothing now.
    monkeypatch.setenv("RTBF_PURGE_CRASH_AT", "before_replace:1")
    path = _dead_letters(tmp_path)
    result = rewrite_file(FileTask("deadletter", str(path)), {"alice": ("req-a",)}, str(tmp_path / "j"))
    assert (result.status, result.records_after) == ("purged", 1)


def test_unknown_points_are_refused_and_no_faults_does_nothing():
    with pytest.raises(ValueError, match="unknown fault point 'before_replce'"):
        faults.reached("before_replce")
    for point in faults.POINTS:
        faults.reached(point)  # NO_FAULTS installed: passes
    assert faults.POINTS == ("before_replace", "after_replace", "analytics_written")
