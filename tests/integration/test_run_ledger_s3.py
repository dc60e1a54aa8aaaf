"""The run ledger on s3:// (moto's server, versioned bucket): no staging copy, a dead run's files go
with every old version, a committed run's files stay."""

from __future__ import annotations

import json

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_rtbf.sinks.files import run_write_dir, write_bytes_atomically
from beam_rtbf.sinks.ledger import RunLedger
from beam_rtbf.testing.s3_server import S3Server

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DEAD_PID = 2**22 + 12345  # above Linux's pid_max: no such process


@pytest.fixture(scope="module")
def s3_server():
    with S3Server() as server:
        yield server


def test_a_dead_run_on_a_versioned_bucket_leaves_no_file_and_no_old_version(s3_server):
    FileSystems.set_options(PipelineOptions(s3_server.pipeline_args()))
    client = s3_server.client()
    client.create_bucket(Bucket="rtbf-ledger")
    client.put_bucket_versioning(Bucket="rtbf-ledger", VersioningConfiguration={"Status": "Enabled"})
    out = "s3://rtbf-ledger/out"
    roots = {kind: f"{out}/{kind}" for kind in ("archive", "analytics", "deadletter")}

    def write_run(ledger: RunLedger, uri: str) -> dict:
        record = ledger.begin([{"uri": uri}], append=False)
        run_id = record["run_id"]
        assert run_write_dir(roots["archive"], run_id) == roots["archive"]  # in place: a rename is a copy here
        write_bytes_atomically(f"{roots['archive']}/dt=2026-01-01/hour=00/part-{run_id}-0001.parquet", b"alice")
        write_bytes_atomically(f"{roots['archive']}/_index/part-{run_id}-0002.parquet", b"alice")
        write_bytes_atomically(f"{roots['deadletter']}/deadletter-{run_id}-0003.jsonl", b"alice")
        return record

    ledger = RunLedger(out, roots)
    kept = write_run(ledger, "synthetic://a")
    ledger.publish(kept, {"clean": 1})
    dead = write_run(ledger, "synthetic://b")
    dead.update(pid=DEAD_PID)
    write_bytes_atomically(f"{out}/_runs/{dead['run_id']}.json", json.dumps(dead).encode())

    assert RunLedger(out, roots).recover() == {"removed": [dead["run_id"]], "resumed": []}

    versions = client.list_object_versions(Bucket="rtbf-ledger", Prefix="out/")
    keys = [v["Key"] for v in versions.get("Versions", []) + versions.get("DeleteMarkers", [])]
    assert not [k for k in keys if dead["run_id"] in k and not k.startswith("out/_runs/")]
    assert len([k for k in keys if kept["run_id"] in k and not k.startswith("out/_runs/")]) == 3
