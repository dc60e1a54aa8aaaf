"""The local streaming form emits while the stream runs, and forgotten subjects stop at once."""

from __future__ import annotations

import glob
import os
import threading
import time

import pytest

from beam_rtbf.pipeline import run
from beam_rtbf.records import parse_time_ms
from tests.helpers.data import analytics_rows, archive_rows, manifests

pytestmark = pytest.mark.slow


def test_windows_are_written_while_the_stream_is_still_running(tmp_path, registry_url):
    out = str(tmp_path / "out")
    first_seen: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if glob.glob(os.path.join(out, "analytics", "**", "*.jsonl"), recursive=True):
                first_seen.append(time.monotonic())
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    summary = run(
        [
            f"--output={out}",
            f"--registry={registry_url}",
            "--window_s=1",
            "--refresh_interval_s=0.5",
            "--sessions=synthetic://sessions?users=500&rate=4000&duration_s=8&seed=5",
            "--requests=synthetic://requests?users=500&request_rate=3&duration_s=8&active_users=50&seed=5",
        ]
    )
    ended = time.monotonic()
    stop.set()

    assert summary["mode"] == "streaming" and summary["runner"] == "LocalStreamingRunner"
    assert summary["filter_strategy"] == "state"
    assert first_seen, "no analytics window was ever written"
    # The first one-second window must be out long before the 8-second stream ends.
    assert first_seen[0] - started < (ended - started) - 3.0, (first_seen[0] - started, ended - started)
    assert summary["sessions_in"] > 20_000
    assert summary["sessions_in"] == summary["clean"] + summary["suppressed"] + summary["dead_lettered"]
    assert summary["suppressed"] > 0
    assert summary["requests_accepted"] >= 15
    assert summary["manifests_written"] == summary["requests_accepted"]
    assert sum(row["sessions"] for row in analytics_rows(out)) == summary["clean"]

    archived = archive_rows(out)
    users = archived.column("user_id").to_pylist()
    times = archived.column("event_time_ms").to_pylist()
    for manifest in manifests(out).values():
        effective = parse_time_ms(manifest["effective_at"])
        subject = manifest["subject_ids"][0]
        after = [t for u, t in zip(users, times) if u == subject and t > effective]
        # A session generated after the filter applied the request can never be archived.
        assert after == [], (subject, effective, after)
    assert summary["effectiveness_latency_ms_max"] < 2_000
