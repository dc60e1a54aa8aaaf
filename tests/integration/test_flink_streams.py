"""The streaming graph on Flink (flink-local) reading real streams: Kinesis (kinesalite) and Kafka
(a KRaft broker), with erasure requests put while the job runs.

Everything runs in a network namespace of its own (``tests/helpers/flink_streams.py``: the stream
server, the job server, Flink); this test reads what that helper reports. Checkpoints are on, so
outputs are exactly-once; the run is stopped with a savepoint, more sessions are written while it
is stopped, and it resumes from the savepoint.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest

from beam_rtbf.records import parse_time_ms
from tests.helpers.engine_runs import ROOT
from tests.helpers.flink_streams import FORGOTTEN, WAVE
from tests.helpers.netns import run_in_netns

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.mark.parametrize("kind", ["kinesis", "kafka"])
def test_requests_put_mid_run_stop_the_subjects_sessions_on_flink(tmp_path, kind):
    done = run_in_netns([sys.executable, "-m", "tests.helpers.flink_streams", str(tmp_path), kind], 1500, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    written = report["written"]
    archived = Counter(report["archived"])
    assert set(archived.values()) == {1}  # none twice (at-least-once reads, checkpoints, the savepoint)
    wave1, later = written[:WAVE], written[WAVE:]  # later: wave 2 (running), wave 3 (stopped, then resumed)
    assert len(later) == 2 * WAVE
    assert {r["event_id"] for r in wave1} <= set(archived)  # before any request: every session kept
    forgotten_later = {r["event_id"] for r in later if r["user_id"] in FORGOTTEN}
    kept_later = {r["event_id"] for r in later if r["user_id"] not in FORGOTTEN}
    assert len(forgotten_later) > 200 and forgotten_later.isdisjoint(archived)  # forgotten: never archived
    assert kept_later <= set(archived)
    assert set(archived) == {r["event_id"] for r in wave1} | kept_later

    assert sorted(report["manifests"]) == sorted(f"r-{s}" for s in FORGOTTEN)
    times = {r["event_id"]: r["event_time"] for r in written}
    users = {r["event_id"]: r["user_id"] for r in written}
    for manifest in report["manifests"].values():
        effective = parse_time_ms(manifest["effective_at"])
        subject = manifest["subject_ids"][0]
        assert [e for e in archived if users[e] == subject and times[e] > effective] == []
        print(f"{kind} {manifest['request_id']}: effective {effective - report['put_requests_at_ms']} ms after the put")

    assert report["windows_while_running"] > 0  # analytics written while the job ran
    summary, resumed = report["summary"], report["resumed"]
    assert (summary["stopped_with"], summary["runner"], summary["mode"]) == ("savepoint", "FlinkRunner", "streaming")
    assert resumed["stopped_with"] == "savepoint"
    print(f"{kind} timings: {report['timings']}")
