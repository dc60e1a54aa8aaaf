"""Ctrl-C / SIGTERM on a local streaming run: the reads stop, everything drains, the summary is written."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers.data import analytics_rows, archive_rows

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENDLESS = [
    "--sessions=synthetic://sessions?users=1000&rate=2000&duration_s=600",
    "--requests=synthetic://requests?users=1000&request_rate=1&active_users=100",
    "--window_s=1",
]


def _start(tmp_path, *extra: str) -> tuple[subprocess.Popen, str]:
    out = str(tmp_path / "out")
    env = {**os.environ, "PYTHONPATH": ROOT}
    command = [sys.executable, "-m", "beam_rtbf.cli", "run", f"--output={out}"]
    command += [f"--registry=embedded://{tmp_path / 'registry.sqlite'}", *ENDLESS, *extra]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return process, out


def _wait_for_outputs(process: subprocess.Popen, out: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        analytics = glob.glob(os.path.join(out, "analytics", "**", "*.jsonl"), recursive=True)
        archive = glob.glob(os.path.join(out, "archive", "dt=*", "**", "*.parquet"), recursive=True)
        if analytics and archive:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"no analytics and archive files within {timeout_s} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_reads_drains_and_writes_the_summary(tmp_path, signum):
    process, out = _start(tmp_path)
    _wait_for_outputs(process, out)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    name = signal.Signals(signum).name
    assert f"{name}: stopping the reads and draining (send {name} again to abort at once)" in stderr
    assert f"  stopped by {name}: the reads ended, everything read was written" in stdout
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as handle:
        summary = json.load(handle)
    assert summary["stopped_by"] == name
    assert summary["conservation_ok"] is True
    assert summary["sessions_in"] > 0
    assert archive_rows(out).num_rows == summary["clean"] == summary["archive_records"]
    # Every window closed: the analytics count every clean session.
    assert sum(row["sessions"] for row in analytics_rows(out)) == summary["clean"]
    assert summary["manifests_written"] == summary["requests_accepted"]


def test_a_second_signal_while_draining_aborts_at_once(tmp_path):
    process, out = _start(tmp_path)
    _wait_for_outputs(process, out)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # two signals sent at once are delivered as one
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert "stopping the reads and draining" in stderr
    assert process.returncode == -signal.SIGTERM  # the default action: killed by the signal (shell: 143)
