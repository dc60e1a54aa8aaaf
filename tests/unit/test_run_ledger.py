"""The run ledger alone (no pipeline): a dead run's staging goes, an interrupted publish finishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from beam_rtbf.sinks.ledger import RunInProgress, RunLedger, input_fingerprint


def _ledger(tmp_path) -> RunLedger:
    out = tmp_path / "out"
    roots = {kind: str(out / kind) for kind in ("archive", "analytics", "deadletter")}
    return RunLedger(str(out), roots, str(out / "manifests"))


def _stage(tmp_path, run_id: str) -> dict[str, str]:
    """Staged files of one run: relative published path -> staged path."""
    out = tmp_path / "out"
    files = {
        "archive/dt=2026-01-01/hour=00/part-a.parquet": f"archive/_staging/{run_id}/dt=2026-01-01/hour=00/part-a.parquet",
        "archive/dt=2026-01-01/hour=01/part-b.parquet": f"archive/_staging/{run_id}/dt=2026-01-01/hour=01/part-b.parquet",
        "archive/_index/part-c.parquet": f"archive/_staging/{run_id}/_index/part-c.parquet",
        "analytics/dt=2026-01-01/hour=00/pane-d.jsonl": f"analytics/_staging/{run_id}/dt=2026-01-01/hour=00/pane-d.jsonl",
        "deadletter/deadletter-e.jsonl": f"deadletter/_staging/{run_id}/deadletter-e.jsonl",
    }
    for published, staged in files.items():
        path = out / staged
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(published)
    return files


def _rewrite(tmp_path, record: dict, **changes) -> None:
    """Change a run record on disk as a dead driver would have left it."""
    record.update(changes)
    (tmp_path / "out" / "_runs" / f"{record['run_id']}.json").write_text(json.dumps(record))


DEAD_PID = 2**22 + 12345  # above Linux's pid_max: no such process


def _files(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names}


def test_a_run_that_died_while_running_leaves_nothing_visible_and_its_staging_is_removed(tmp_path):
    ledger = _ledger(tmp_path)
    record = ledger.begin([{"uri": "synthetic://sessions"}], append=False)
    _rewrite(tmp_path, record, pid=DEAD_PID)
    _stage(tmp_path, record["run_id"])
    (tmp_path / "out" / "manifests").mkdir()
    (tmp_path / "out" / "manifests" / ".tmp-0123456789ab-r-1.json").write_text("{")  # killed mid-write

    report = _ledger(tmp_path).recover()

    assert report == {"removed": [record["run_id"]], "resumed": []}
    out = tmp_path / "out"
    assert {f for f in _files(out) if not f.startswith("_runs/")} == set()
    assert _ledger(tmp_path).committed_with(record["fingerprint"]) is None


def test_an_interrupted_publish_is_finished_by_the_next_run_and_counts_once(tmp_path):
    ledger = _ledger(tmp_path)
    inputs = [{"uri": "file:///data/a.jsonl", "files": [["/data/a.jsonl", 10, 1.0]]}]
    record = ledger.begin(inputs, append=False)
    files = _stage(tmp_path, record["run_id"])
    # The driver died mid-publish: the record says publishing, one file is already in place.
    _rewrite(tmp_path, record, state="publishing", summary={"clean": 3}, pid=DEAD_PID)
    out = tmp_path / "out"
    first = "archive/dt=2026-01-01/hour=00/part-a.parquet"
    (out / first).parent.mkdir(parents=True)
    os.rename(out / files[first], out / first)

    report = _ledger(tmp_path).recover()

    assert report == {"removed": [], "resumed": [record["run_id"]]}
    assert {f for f in _files(out) if not f.startswith("_runs/")} == set(files)
    for published in files:
        assert (out / published).read_text() == published
    done = _ledger(tmp_path).committed_with(input_fingerprint(inputs))
    assert done is not None and done["run_id"] == record["run_id"] and done["summary"] == {"clean": 3}
    assert _ledger(tmp_path).recover() == {"removed": [], "resumed": []}  # settled: nothing more to do


def test_publish_renames_data_before_the_index_and_commits(tmp_path):
    ledger = _ledger(tmp_path)
    record = ledger.begin([{"uri": "synthetic://x"}], append=False)
    files = _stage(tmp_path, record["run_id"])

    ledger.publish(record, {"clean": 1})

    out = tmp_path / "out"
    assert {f for f in _files(out) if not f.startswith("_runs/")} == set(files)
    assert not (out / "archive" / "_staging").exists()
    with open(out / "_runs" / f"{record['run_id']}.json", encoding="utf-8") as handle:
        stored = json.load(handle)
    assert stored["state"] == "committed" and stored["published_files"] == len(files)


def test_a_live_run_on_this_host_is_not_touched(tmp_path):
    ledger = _ledger(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = ledger.begin([{"uri": "synthetic://x"}], append=False)
        _rewrite(tmp_path, record, pid=sleeper.pid)
        files = _stage(tmp_path, record["run_id"])
        with pytest.raises(RunInProgress, match="still writing"):
            _ledger(tmp_path).recover()
        assert all((tmp_path / "out" / staged).exists() for staged in files.values())
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_fingerprint_changes_when_an_input_file_changes():
    a = [{"uri": "file:///d/*.jsonl", "files": [["/d/1.jsonl", 5, 1.0]]}]
    b = [{"uri": "file:///d/*.jsonl", "files": [["/d/1.jsonl", 6, 1.0]]}]
    assert input_fingerprint(a) == input_fingerprint(json.loads(json.dumps(a)))
    assert input_fingerprint(a) != input_fingerprint(b)
