"""Exactly-once outputs (``sinks/stable.py``): the runner is asked for stable input, and a replayed
element rewrites the same files instead of adding copies (the Flink resume itself:
tests/integration/test_flink_resume.py)."""

from __future__ import annotations

import glob
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

from beam_rtbf.analytics.aggregate import _WriteAnalyticsFn
from beam_rtbf.archive.write import INDEX_DIR, _ByPartition, _WriteGatheredFn
from beam_rtbf.options import FlinkCheckpointOptions
from beam_rtbf.records import DeadLetter
from beam_rtbf.sinks.files import _WriteGatheredDeadLettersFn
from beam_rtbf.sinks.stable import StableParDo
from tests.helpers.composites import session_rows
from tests.helpers.data import T0

HOUR_MS = 3_600_000
BATCHES = [
    session_rows([("alice", T0 + 1_000), ("bob", T0 + 2_000), ("alice", T0 + HOUR_MS + 5_000)]),
    session_rows([("carol", T0 + 3_000), ("bob", T0 + HOUR_MS + 6_000)]),
]


def _tree(root: str) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    found = {}
    for path in glob.glob(os.path.join(root, "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = handle.read()
    return found


def test_stable_pardo_asks_the_runner_for_stable_input():
    p = beam.Pipeline()
    _ = p | beam.Create([1]) | "Stable" >> StableParDo(beam.Map(lambda x: x).dofn) | "Plain" >> beam.Map(str)
    proto = p.to_runner_api()
    payloads = {
        t.unique_name: beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
        for t in proto.components.transforms.values()
        if t.spec.urn == common_urns.primitives.PAR_DO.urn
    }
    assert payloads["Stable"].requires_stable_input
    assert not any(v.requires_stable_input for k, v in payloads.items() if k.startswith("Plain"))
    assert common_urns.requirements.REQUIRES_STABLE_INPUT.urn in proto.requirements


def _write_archive(root: str) -> None:
    """What the stable stage does with the gathered elements (the same ones again after a restore).

    The writer DoFn is called directly: the FnApiRunner cannot run the processing-time trigger of
    ``GatherForWrite`` in a bounded pipeline (the Flink runs are the integration tests)."""
    key = _ByPartition(partition_s=3600, shards=1)
    gathered: dict[tuple[int, int], list[pa.Table]] = {}
    for batch in BATCHES:
        for k, piece in key(batch):
            gathered.setdefault(k, []).append(piece)
    writer = _WriteGatheredFn(root, partition_s=3600)
    for element in sorted(gathered.items()):
        list(writer.process(element))


def test_a_replayed_archive_write_rewrites_the_same_files(tmp_path):
    root = str(tmp_path / "archive")
    _write_archive(root)
    first = _tree(root)
    _write_archive(root)  # the same elements again: what a restored Flink job hands the writer
    assert _tree(root) == first

    data = sorted(f for f in first if not f.startswith(INDEX_DIR))
    assert [os.path.dirname(f) for f in data] == ["dt=2026-01-01/hour=00", "dt=2026-01-01/hour=01"]
    events = sorted(e for f in data for e in pq.read_table(os.path.join(root, f)).column("event_id").to_pylist())
    assert events == sorted(e for b in BATCHES for e in b.column("event_id").to_pylist())  # each once
    index = sorted(f for f in first if f.startswith(INDEX_DIR))
    assert sorted(os.path.basename(f) for f in index) == sorted(os.path.basename(f) for f in data)
    named = {p for f in index for p in pq.read_table(os.path.join(root, f)).column("path").to_pylist()}
    assert named == set(data)  # every index row names a data file that exists


def test_a_replayed_analytics_pane_and_dead_letters_rewrite_their_files(tmp_path):
    pane = pa.table(
        {
            "window_start": ["2026-01-01T00:00:00Z"],
            "window_end": ["2026-01-01T00:00:01Z"],
            "action_type": ["view"],
            "device_type": ["iPhone"],
            "sessions": [3],
            "distinct_users": [2],
            "avg_secs_elapsed": [1.5],
        }
    )
    letter = DeadLetter("sessions", "test://x", "1", "not JSON", b"{bad")
    analytics = _WriteAnalyticsFn(str(tmp_path / "analytics"), content_names=True)
    letters = _WriteGatheredDeadLettersFn(str(tmp_path / "dl"))

    def write() -> None:
        list(analytics.process(pane, pane_info=PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0)))
        letters.process((0, [letter]))

    write()
    first = _tree(str(tmp_path))
    write()
    assert _tree(str(tmp_path)) == first
    assert sorted(os.path.dirname(f) for f in first) == ["analytics/dt=2026-01-01/hour=00", "dl"]


def test_exactly_once_follows_checkpoints_and_never_applies_to_bounded_runs():
    def once(*flags: str, streaming: bool = True) -> bool:
        return PipelineOptions(list(flags)).view_as(FlinkCheckpointOptions).exactly_once(streaming)

    assert once("--checkpointing_interval=2000")
    assert not once()
    assert not once("--checkpointing_interval=2000", "--exactly_once_outputs=off")
    assert once("--exactly_once_outputs=on")
    assert not once("--exactly_once_outputs=on", streaming=False)
