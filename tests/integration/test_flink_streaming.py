"""The streaming graph on Flink (flink-local): windows written while the stream runs, and no
session of a forgotten subject archived after its request took effect.

The job server and Flink bind every interface: the run happens in a network namespace of its
own; this process only watches the output folder.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from beam_rtbf.records import parse_time_ms
from tests.helpers.data import analytics_rows, archive_rows, manifests
from tests.helpers.engine_runs import ROOT, summary
from tests.helpers.netns import netns_prefix

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.mark.parametrize("strategy", ["state", "broadcast"])
def test_streaming_on_flink_writes_windows_while_running_and_forgets_at_once(tmp_path, strategy):
    """Both the keyed-state filter and the broadcast side input (refreshed while the sessions run)
    end with their sources."""
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "beam_rtbf.cli", "run", "--runner=flink-local", "--streaming",
        f"--filter_strategy={strategy}", f"--output={out}", f"--registry=embedded://{tmp_path / 'r.sqlite'}",
        "--window_s=1", "--sessions=synthetic://sessions?users=500&rate=1000&duration_s=40&seed=5",
        "--requests=synthetic://requests?users=500&request_rate=1&duration_s=40&active_users=50&seed=5",
    ]  # fmt: skip
    job = subprocess.Popen(
        [*netns_prefix(), *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first_window = None
    deadline = time.monotonic() + 400
    try:
        while job.poll() is None and time.monotonic() < deadline:
            if first_window is None and glob.glob(os.path.join(out, "analytics", "**", "*.jsonl"), recursive=True):
                first_window = time.monotonic()
            time.sleep(0.1)
        assert job.poll() is not None, "the streaming job did not end after its sources did"
    finally:
        if job.poll() is None:
            job.kill()
        stdout, stderr = job.communicate(timeout=60)
    ended = time.monotonic()
    assert job.returncode == 0, stderr[-3000:]

    got = summary(out)
    assert (got["runner"], got["mode"], got["filter_strategy"]) == ("FlinkRunner", "streaming", strategy)
    # The stream lasts 40 s: windows written while it runs arrive well over 8 s before the end
    # (a run that writes only at the end has them < 1 s before it).
    assert first_window is not None and ended - first_window > 8.0, "windows came only at the end of the stream"
    assert got["sessions_in"] > 30_000
    assert got["sessions_in"] == got["clean"] + got["suppressed"] + got["dead_lettered"]
    assert got["suppressed"] > 0 and got["requests_accepted"] >= 20
    assert got["manifests_written"] == got["requests_accepted"]
    assert sum(row["sessions"] for row in analytics_rows(str(out))) == got["clean"]
    archived = archive_rows(str(out))
    assert archived.num_rows == got["clean"]
    users = archived.column("user_id").to_pylist()
    times = archived.column("event_time_ms").to_pylist()
    for manifest in manifests(str(out)).values():
        effective = parse_time_ms(manifest["effective_at"])
        subject = manifest["subject_ids"][0]
        after = [t for u, t in zip(users, times) if u == subject and t > effective]
        assert after == [], (subject, effective, after)  # generated after the filter applied it: never archived


def test_a_signal_cancels_the_streaming_job_through_the_job_api(tmp_path):
    """SIGINT cancels the Flink job through the Job API (exit 0, the job server gone with it), what
    was archived is archived once, and the summary does not claim counts Flink did not report."""
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "beam_rtbf.cli", "run", "--runner=flink-local", "--streaming",
        "--filter_strategy=state", f"--output={out}", f"--registry=embedded://{tmp_path / 'r.sqlite'}",
        "--window_s=1", "--dedupe=off",
        "--sessions=synthetic://sessions?users=500&rate=1000&duration_s=600&seed=7",
        "--requests=synthetic://requests?users=500&request_rate=1&duration_s=600&active_users=50&seed=7",
    ]  # fmt: skip
    job = subprocess.Popen([*netns_prefix(), *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 400
        while not archive_files(out):
            assert job.poll() is None and time.monotonic() < deadline, "nothing archived while running"
            time.sleep(0.5)
        job.send_signal(signal.SIGINT)
        stdout, stderr = job.communicate(timeout=180)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, stderr[-3000:]
    assert "SIGINT: cancelling the job (send SIGINT again to abort at once)" in stderr
    got = summary(out)
    assert (got["cancelled"], got["stopped_by"], got["conservation_ok"], got["resume_from"]) == (
        True, "SIGINT", None, None
    )  # fmt: skip
    assert got["sessions_in"] is None and got["figures"].startswith("not reported")
    assert "cancelled by SIGINT" in stdout
    ids = Counter(archive_rows(str(out)).column("event_id").to_pylist())
    assert ids and set(ids.values()) == {1}
    assert subprocess.run(["pgrep", "-g", str(job.pid)], capture_output=True).stdout == b""  # no job server left


def archive_files(out: Path) -> list[str]:
    return glob.glob(str(out / "archive" / "dt=*" / "**" / "*.parquet"), recursive=True)
