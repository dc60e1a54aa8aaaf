"""Read parallelism on Flink (flink-local, --parallelism=2): a sharded source's restrictions are
spread over both task slots, which read at the same time, and every record is read once.

Each shard reader appends one line per process call that emitted records to --read_trace
(beam_rtbf/sources/polling.py): which reader (a DoFn instance in the SDK worker), which root,
how many rows, when. With LOOPBACK workers all readers live in one process, so "two slots read"
is shown as two readers whose process calls overlap in time (one Flink subtask runs one bundle at
a time), each with a non-empty share, and the shares add up to the run's sessions_in exactly.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers.engine_runs import ROOT, summary
from tests.helpers.netns import run_in_netns

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_two_task_slots_read_the_shards_of_one_stream_at_once_and_read_each_record_once(tmp_path):
    out, trace = tmp_path / "out", tmp_path / "trace.jsonl"
    argv = [
        sys.executable, "-m", "beam_rtbf.cli", "run", "--runner=flink-local", "--streaming", "--parallelism=2",
        "--filter_strategy=state", f"--output={out}", f"--registry=embedded://{tmp_path / 'r.sqlite'}",
        "--window_s=1", "--sessions=synthetic://sessions?users=500&rate=2000&duration_s=10&shards=4&seed=5",
        "--requests=synthetic://requests?users=500&request_rate=1&duration_s=10&active_users=50&seed=5",
    ]  # fmt: skip
    done = run_in_netns([*argv, f"--read_trace={trace}"], timeout=500, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    got = summary(out)
    assert (got["runner"], got["mode"]) == ("FlinkRunner", "streaming")

    calls = [json.loads(line) for line in trace.read_text().splitlines()]
    assert {c["root"] for c in calls} == {"0", "1", "2", "3"}  # a restriction per shard
    shares: dict[str, int] = {}
    for call in calls:
        shares[call["reader"]] = shares.get(call["reader"], 0) + call["rows"]
    assert len(shares) >= 2 and all(rows > 0 for rows in shares.values()), shares
    assert sum(shares.values()) == got["sessions_in"] > 15_000  # every generated session read once
    for root in "0123":  # a root is read by one reader at a time (its restriction moves, never copies)
        spans = sorted((c["start"], c["end"]) for c in calls if c["root"] == root)
        assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))
    overlapping = [
        (a["reader"], b["reader"])
        for a in calls
        for b in calls
        if a["reader"] < b["reader"] and a["start"] < b["end"] and b["start"] < a["end"]
    ]
    assert overlapping, "the readers never read at the same time: one slot did all the reading"
