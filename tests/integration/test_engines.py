"""The same graph on real engines: Flink (embedded in Beam's Flink job server) and Spark
(local[2] in Beam's Spark job server), started by Beam's own FlinkRunner / SparkRunner from the
job server beam-rtbf fetches once (beam_rtbf/job_servers.py), against the direct runner on the
same input: every summary count, archived record, analytics row, manifest and dead letter.

The job servers bind every interface: each run happens in a network namespace of its own.
"""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from beam_rtbf.cli import main
from beam_rtbf.job_servers import JOB_SERVERS, job_server_jar
from tests.helpers.engine_runs import T0, assert_same_outputs, cli_in_netns, sessions, summary, write_jsonl
from tests.helpers.purge_setup import aggregate_archive, analytics_rows, archive_counts, build

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ENGINES = {"flink-local": "FlinkRunner", "spark-local": "SparkRunner"}
FORGOTTEN = ("u003", "u017", "u042")
BAD_LINES = [
    '{"user_id": "u017", "event_time": "not-a-time"}',  # a dead letter holding a forgotten id
    '{"user_id": "u020", "secs_elapsed": -1}',
    '{"user_id": "u021" "broken json',
]


@pytest.fixture(scope="module")
def bounded_input(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("input")
    path = write_jsonl(root / "sessions.jsonl", sessions(n_users=80, per_user=15))
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in BAD_LINES))
    requests = write_jsonl(
        root / "requests.jsonl",
        [{"request_id": f"r-{u}", "subject_id": u, "requested_at": T0} for u in FORGOTTEN],
    )
    return [f"--sessions=file://{path}", f"--requests=file://{requests}", "--archive_partition_s=3600",
            "--dedupe=off"]  # fmt: skip


@pytest.fixture(scope="module")
def direct_run(bounded_input, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("direct") / "out"
    assert main(["run", f"--output={out}", f"--registry=embedded://{out}.sqlite", *bounded_input]) == 0
    return out


@pytest.mark.parametrize("profile", sorted(ENGINES))
def test_bounded_run_equals_the_direct_runner(profile, bounded_input, direct_run, tmp_path):
    out = tmp_path / "out"
    assert cli_in_netns("run", f"--runner={profile}", f"--output={out}", f"--registry=embedded://{out}.sqlite",
                        *bounded_input) == 0  # fmt: skip
    got = summary(out)
    assert got["runner"] == ENGINES[profile]
    assert (got["sessions_in"], got["suppressed"], got["dead_lettered"], got["manifests_written"]) == (1203, 45, 3, 3)
    assert_same_outputs(out, direct_run)
    assert not set(FORGOTTEN) & set(archive_counts(out))


@pytest.mark.parametrize("profile", sorted(ENGINES))
def test_purge_on_the_engine_verifies_every_receipt(profile, tmp_path, registry_url, monkeypatch):
    monkeypatch.setenv("RTBF_SUBJECT_HASH_KEY", "test-key")
    monkeypatch.chdir(tmp_path)
    setup = build(tmp_path / "a", registry_url)
    assert cli_in_netns("purge", f"--output={setup.out}", f"--registry={setup.registry}", *setup.extra,
                        f"--runner={profile}", cwd=tmp_path) == 0  # fmt: skip
    assert archive_counts(setup.out) == setup.expected_after
    assert analytics_rows(setup.out) == aggregate_archive(setup.out)
    receipts = [json.loads(p.read_text()) for p in (setup.out / "receipts").glob("*.json")]
    assert Counter(r["status"] for r in receipts) == Counter({"verified": 3})
    (purge_summary,) = [json.loads(p.read_text()) for p in (setup.out / "receipts" / "_runs").glob("*-summary.json")]
    assert purge_summary["runner"] == ENGINES[profile]


def test_the_job_server_is_fetched_once_into_the_cache(tmp_path, monkeypatch, caplog):
    """A fresh cache gets the Flink job server with one message; the next call reuses it as is."""
    monkeypatch.setenv("RTBF_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level("WARNING", logger="beam_rtbf.job_servers"):
        jar = job_server_jar("flink")
    server = JOB_SERVERS["flink"]
    assert jar.parent == tmp_path / "cache" / "job-servers" / server.name
    assert [r.getMessage() for r in caplog.records if r.name == "beam_rtbf.job_servers"][0].startswith(
        "beam-rtbf: fetching the flink job server (Beam 2.62.0, Flink 1.19.0) into "
    )
    if jar.name == "launcher.jar":  # assembled: every class path entry is there, the runner among them
        with zipfile.ZipFile(jar) as z:
            manifest = z.read("META-INF/MANIFEST.MF").decode().replace("\n ", "")
        entries = manifest.split("Class-Path: ")[1].split()
        assert f"lib/{server.runner_artifact}-{server.beam_version}.jar" in entries
        assert all((jar.parent / e).is_file() for e in entries)
        assert f"Main-Class: {server.main_class}" in manifest
    left = sorted(p.name for p in (tmp_path / "cache" / "job-servers").iterdir())
    assert left == sorted([server.name, f".{server.name}.lock"])  # no staging left
    caplog.clear()
    monkeypatch.setattr("shutil.which", lambda name: None)  # no Maven now: the cache must serve
    assert job_server_jar("flink") == jar
    assert not [r for r in caplog.records if r.name == "beam_rtbf.job_servers"]
