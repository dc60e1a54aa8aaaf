"""``WriteManifests`` alone, over an archive ``WriteArchive`` wrote: exact manifest content, once."""

from __future__ import annotations

import json
import os

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_rtbf.archive.write import WriteArchive
from beam_rtbf.manifests.build import WriteManifests, manifest_path
from beam_rtbf.records import ErasureRequest, iso_ms
from beam_rtbf.registry import open_registry
from tests.helpers.composites import rtbf_counters, session_rows
from tests.helpers.data import T0

HOUR_MS = 3_600_000
RETENTION_S = 7 * 86_400
STREAMS = [{"uri": "file:///data/sessions.jsonl", "stream": "sessions"}]


def _write_archive(archive: str) -> list[str]:
    batch = session_rows(
        [
            ("alice", T0 + 1_000),
            ("bob", T0 + 2_000),
            ("other", T0 + 13_000, "alice@example.com"),  # alice's alias on another user's row
            ("alice", T0 + HOUR_MS + 5_000),
        ]
    )
    p = TestPipeline()
    _ = p | beam.Create([batch]) | WriteArchive(archive, partition_s=3600)
    p.run()
    return sorted(
        os.path.relpath(os.path.join(d, f), archive)
        for d, _, files in os.walk(archive)
        for f in files
        if f.endswith(".parquet") and "_index" not in d
    )


def _write_manifests(element, out: str, archive: str, registry_url: str, expected: list[dict]) -> dict[str, int]:
    p = TestPipeline()
    manifests = (
        p
        | beam.Create([element])
        | WriteManifests(out, archive, 10, STREAMS, RETENTION_S, registry_url, registry_retry_s=0)
    )
    assert_that(manifests, equal_to(expected))
    return rtbf_counters(p.run())


def test_manifest_lists_every_partition_window_and_stream_of_the_subject_once(tmp_path, registry_url):
    archive, out = str(tmp_path / "archive"), str(tmp_path / "manifests")
    files = _write_archive(archive)
    assert [os.path.dirname(f) for f in files] == ["dt=2026-01-01/hour=00", "dt=2026-01-01/hour=01"]
    with open_registry(registry_url) as registry:
        [accepted] = registry.add([ErasureRequest("r-alice", "alice", T0, aliases=("alice@example.com",))])
    effective_at = accepted.accepted_at_ms + 250
    expected = {
        "manifest_version": 1,
        "request_id": "r-alice",
        "subject_ids": ["alice", "alice@example.com"],
        "regulation": "gdpr",
        "kind": "erase",
        "requested_at": "2026-01-01T00:00:00.000Z",
        "accepted_at": iso_ms(accepted.accepted_at_ms),
        "effective_at": iso_ms(effective_at),
        "deadline": "2026-01-31T00:00:00.000Z",
        "registry_version": accepted.version,
        "status": "pending",
        "locations": {
            "archive_partitions": [
                {
                    "path": files[0],
                    "records": 1,  # one by user id, one by alias: the larger per-kind count
                    "min_event_time": "2026-01-01T00:00:01.000Z",
                    "max_event_time": "2026-01-01T00:00:13.000Z",
                },
                {
                    "path": files[1],
                    "records": 1,
                    "min_event_time": "2026-01-01T01:00:05.000Z",
                    "max_event_time": "2026-01-01T01:00:05.000Z",
                },
            ],
            "analytics_windows": [
                {"start": "2026-01-01T00:00:00.000Z", "end": "2026-01-01T00:00:10.000Z"},
                {"start": "2026-01-01T00:00:10.000Z", "end": "2026-01-01T00:00:20.000Z"},
                {"start": "2026-01-01T01:00:00.000Z", "end": "2026-01-01T01:00:10.000Z"},
            ],
            "streams": [
                {
                    "uri": "file:///data/sessions.jsonl",
                    "stream": "sessions",
                    "retention_holds_until": iso_ms(effective_at + RETENTION_S * 1000),
                }
            ],
        },
    }
    counters = _write_manifests((accepted, effective_at), out, archive, registry_url, [expected])
    assert counters["manifests_written"] == 1
    path = manifest_path(out, "r-alice")
    with open(path, encoding="utf-8") as handle:
        assert json.load(handle) == expected
    assert os.listdir(out) == [os.path.basename(path)]

    # Seen again (a duplicate, a re-run): no second manifest, the first one kept, the step recorded once.
    counters = _write_manifests((accepted, effective_at + 1_000), out, archive, registry_url, [])
    assert counters.get("manifests_written", 0) == 0
    with open(path, encoding="utf-8") as handle:
        assert json.load(handle) == expected
    with open_registry(registry_url) as registry:
        steps = [(e.status, e.at_ms) for e in registry.timeline("r-alice") if e.status == "suppressed"]
    assert steps == [("suppressed", effective_at)]
