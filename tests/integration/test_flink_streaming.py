"""The streaming graph on Flink (flink-local): windows written while the stream runs, and no
session of a forgotten subject archived after its request took effect.

The job server and Flink bind every interface: the run happens in a network namespace of its
own; this process only watches the output folder.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

import pytest

from beam_rtbf.records import parse_time_ms
from tests.helpers.data import analytics_rows, archive_rows, manifests
from tests.helpers.engine_runs import ROOT, summary
from tests.helpers.netns import netns_prefix

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_streaming_on_flink_writes_windows_while_running_and_forgets_at_once(tmp_path):
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "beam_rtbf.cli", "run", "--runner=flink-local", "--streaming",
        "--filter_strategy=state", f"--output={out}", f"--registry=embedded://{tmp_path / 'r.sqlite'}",
        "--window_s=1", "--sessions=synthetic://sessions?users=500&rate=2000&duration_s=20&seed=5",
        "--requests=synthetic://requests?users=500&request_rate=2&duration_s=20&active_users=50&seed=5",
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
    assert (got["runner"], got["mode"], got["filter_strategy"]) == ("FlinkRunner", "streaming", "state")
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
