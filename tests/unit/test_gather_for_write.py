"""``GatherForWrite`` (``sinks/stable.py``) on the local streaming runner fed by a TestStream, whose
TestClock moves only when the stream says so: a pane every ``flush_s`` of processing time, and the
rest when the stream ends. With a processing-time trigger alone the run never finished: the last
rows stayed gathered, and the pending processing-time timer kept Beam's executor waiting forever.

The pipelines run in a child process (``python -m tests.unit.test_gather_for_write``) with a
deadline, so a hang fails the test in bounded time instead of stalling the session; the child
prints what it saw, then ``DONE``.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import apache_beam as beam
import pyarrow.parquet as pq

from tests.helpers.composites import session_rows
from tests.helpers.data import T0

HOUR_MS = 3_600_000
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_DEADLINE_S = 120  # the child needs a few seconds; a hang is cut here

# Archive batches: some before a processing-time advance (an early pane), some after it, then the
# stream ends (only the watermark moving to +inf can write those). Two hour partitions.
EARLY = [
    session_rows([("alice", T0 + 1_000), ("bob", T0 + 2_000), ("alice", T0 + HOUR_MS + 5_000)]),
    session_rows([("carol", T0 + 3_000)]),
]
LATE = [
    session_rows([("dave", T0 + 4_000), ("alice", T0 + HOUR_MS + 6_000)]),
    session_rows([("erin", T0 + HOUR_MS + 7_000), ("bob", T0 + 8_000)]),
]


def _event_ids(batches) -> list[str]:
    return sorted(i for b in batches for i in b.column("event_id").to_pylist())


def _gathered_panes() -> None:
    """Values through ``GatherForWrite(flush_s=5)``: prints each pane's values, timing and last flag."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_stream import TestStream

    from beam_rtbf.local_runner import LocalStreamingRunner
    from beam_rtbf.sinks.stable import GatherForWrite

    stream = (
        TestStream()
        .add_elements([1, 2], event_timestamp=10)
        .advance_processing_time(6)  # first pane: 5 s after its first element
        .add_elements([3], event_timestamp=11)
        .advance_processing_time(6)  # second pane: a processing-time pane fires again, not only once
        .add_elements([4], event_timestamp=12)
        .advance_processing_time(1)
        .advance_watermark_to(20)
        .add_elements([5], event_timestamp=13)
        .advance_watermark_to_infinity()  # the end: 4 and 5 are written now, not never
    )

    class _Record(beam.DoFn):  # the DoFn runs on a copy: it prints, the parent reads
        def process(self, element, pane=beam.DoFn.PaneInfoParam):
            pane = {"values": sorted(element[1]), "timing": int(pane.timing), "last": pane.is_last}
            print("PANE " + json.dumps(pane), flush=True)

    with beam.Pipeline(runner=LocalStreamingRunner(), options=PipelineOptions(["--streaming"])) as p:
        _ = p | stream | GatherForWrite(lambda x: [("k", x)], flush_s=5) | beam.ParDo(_Record())


def _archive(root: str) -> None:
    """``WriteArchive(flush_s=5)`` (the local streaming runner's gathered archive) over a TestStream."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_stream import TestStream

    from beam_rtbf.archive.write import WriteArchive
    from beam_rtbf.local_runner import LocalStreamingRunner

    stream = TestStream().add_elements(EARLY, event_timestamp=T0 / 1000).advance_processing_time(6)
    stream = stream.add_elements(LATE, event_timestamp=(T0 + 4_000) / 1000).advance_watermark_to_infinity()
    with beam.Pipeline(runner=LocalStreamingRunner(), options=PipelineOptions(["--streaming"])) as p:
        _ = p | stream | WriteArchive(root, partition_s=3600, flush_s=5)


def _child(*args: str) -> list[str]:
    """Runs this module with ``args`` in a child process; its output lines, or a failure at the deadline."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.unit.test_gather_for_write", *args],
            cwd=_ROOT,
            capture_output=True,
            text=True,
            timeout=_DEADLINE_S,
        )
    except subprocess.TimeoutExpired as hung:  # subprocess.run has killed the child
        said = hung.stderr.decode(errors="replace") if isinstance(hung.stderr, bytes) else (hung.stderr or "")
        raise AssertionError(f"the pipeline did not finish within {_DEADLINE_S} s (hung): {said[-2000:]}") from None
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    assert lines and lines[-1] == "DONE", done.stdout[-4000:]
    return lines


def test_gathered_panes_fire_on_processing_time_and_the_rest_when_a_test_stream_ends():
    panes = [json.loads(line[len("PANE ") :]) for line in _child("panes") if line.startswith("PANE ")]
    assert [pane["values"] for pane in panes] == [[1, 2], [3], [4, 5]]
    assert [pane["timing"] for pane in panes] == [0, 0, 1]  # EARLY, EARLY, ON_TIME
    assert [pane["last"] for pane in panes] == [False, False, True]


def test_gathered_archive_writes_every_row_once_when_a_test_stream_ends(tmp_path):
    root = str(tmp_path / "archive")
    _child("archive", root)
    data = sorted(glob.glob(os.path.join(root, "dt=*", "hour=*", "*.parquet")))
    assert {os.path.relpath(os.path.dirname(f), root) for f in data} == {
        "dt=2026-01-01/hour=00",
        "dt=2026-01-01/hour=01",
    }
    archived = sorted(i for f in data for i in pq.read_table(f).column("event_id").to_pylist())
    assert archived == _event_ids(EARLY + LATE)  # every row, once: 8 rows, none held back, none twice
    index = pq.read_table(os.path.join(root, "_index")).to_pylist()
    assert {row["path"] for row in index} == {os.path.relpath(f, root) for f in data}
    assert sum(row["records"] for row in index if row["id_kind"] == "user_id") == len(archived) == 8


if __name__ == "__main__":
    if sys.argv[1] == "panes":
        _gathered_panes()
    elif sys.argv[1] == "archive":
        _archive(sys.argv[2])
    else:
        raise SystemExit(f"unknown case {sys.argv[1]!r}")
    print("DONE")
