"""The portability check: the graph through Beam's PortableRunner and the embedded job service
(the Job API the Flink and Spark job servers speak), LOOPBACK workers, against the local runner;
and a cluster-shaped run: a separate job service, an external SDK worker pool, --detach.

Beam's job service and worker handlers bind every interface, so every run that starts them runs
in a network namespace of its own (tests/helpers/netns.py): nothing is reachable from outside.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest

from beam_rtbf.cli import main
from tests.helpers.engine_runs import ROOT, cli_in_netns, write_jsonl
from tests.helpers.engine_runs import sessions as sample_sessions
from tests.helpers.engine_runs import summary as read_summary
from tests.helpers.netns import run_in_netns
from tests.helpers.purge_setup import aggregate_archive, analytics_rows, archive_counts, archive_table, build

pytestmark = [pytest.mark.slow]


def test_bounded_graph_on_the_portable_runner_equals_the_local_run(tmp_path):
    sessions = write_jsonl(tmp_path / "sessions.jsonl", sample_sessions())
    requests = write_jsonl(
        tmp_path / "requests.jsonl",
        [{"request_id": f"r{u}", "subject_id": f"u{u:03d}", "requested_at": 1_767_225_600_000} for u in (3, 17, 42)],
    )
    outs = {}
    for runner, run_cli in (("direct", lambda *a: main(list(a))), ("portable", cli_in_netns)):
        out = tmp_path / runner
        assert run_cli("run", f"--runner={runner}", f"--sessions=file://{sessions}", f"--requests=file://{requests}",
                       f"--output={out}", f"--registry=embedded://{tmp_path / runner}.sqlite",
                       "--archive_partition_s=3600", "--dedupe=off") == 0  # fmt: skip
        outs[runner] = out
    direct, portable = read_summary(outs["direct"]), read_summary(outs["portable"])
    assert portable["runner"] == "PortableRunner[embed]" and direct["runner"] == "FnApiRunner"
    for key in ("sessions_in", "clean", "suppressed", "dead_lettered", "requests_accepted", "manifests_written"):
        assert portable[key] == direct[key], key
    assert (portable["sessions_in"], portable["suppressed"], portable["manifests_written"]) == (720, 36, 3)
    assert archive_counts(outs["portable"]) == archive_counts(outs["direct"])
    assert analytics_rows(outs["portable"]) == analytics_rows(outs["direct"]) == aggregate_archive(outs["portable"])
    assert not {"u003", "u017", "u042"} & set(archive_counts(outs["portable"]))


def test_streaming_graph_on_the_embedded_job_service(tmp_path):
    out = tmp_path / "out"
    assert cli_in_netns("run", "--runner=portable", "--sessions=synthetic://sessions?users=300&rate=2000&duration_s=3",
                        "--requests=synthetic://requests?users=300&request_rate=3&duration_s=3", f"--output={out}",
                        f"--registry=embedded://{tmp_path / 'r.sqlite'}") == 0  # fmt: skip
    summary = read_summary(out)
    # auto picks keyed state there: a PeriodicImpulse-refreshed side input never ends on it.
    assert summary["runner"] == "PortableRunner[embed]" and summary["filter_strategy"] == "state"
    assert summary["sessions_in"] > 1000 and summary["conservation_ok"]
    assert summary["sessions_in"] == summary["clean"] + summary["suppressed"] + summary["dead_lettered"]
    assert archive_table(out).num_rows == summary["clean"]
    assert sum(v[0] for v in analytics_rows(out).values()) == summary["clean"]


def test_streaming_broadcast_on_the_embedded_job_service_is_refused(tmp_path, capsys):
    assert main(["run", "--runner=portable", "--filter_strategy=broadcast", "--sessions=synthetic://sessions?rate=10",
                 "--requests=synthetic://requests?request_rate=1", f"--output={tmp_path}",
                 f"--registry=embedded://{tmp_path / 'r.sqlite'}"]) == 2  # fmt: skip
    assert "never ends on the embedded job service" in capsys.readouterr().err


def test_purge_on_the_portable_runner(tmp_path, registry_url, monkeypatch):
    monkeypatch.setenv("RTBF_SUBJECT_HASH_KEY", "test-key")
    monkeypatch.chdir(tmp_path)
    setup = build(tmp_path / "a", registry_url)
    assert cli_in_netns("purge", f"--output={setup.out}", f"--registry={setup.registry}", *setup.extra,
                        "--runner=portable", cwd=tmp_path) == 0  # fmt: skip
    assert archive_counts(setup.out) == setup.expected_after
    assert analytics_rows(setup.out) == aggregate_archive(setup.out)
    receipts = [json.loads(p.read_text()) for p in (setup.out / "receipts").glob("*.json")]
    assert Counter(r["status"] for r in receipts) == Counter({"verified": 3})


def test_detached_submission_to_a_separate_job_service_and_worker_pool(tmp_path):
    """The Flink shape without Flink: job service and worker pool are other processes, the
    environment is EXTERNAL (the sidecar's localhost:PORT), and `--detach` returns while the job
    runs; the job then finishes on the service and writes what the local run writes."""
    sessions = write_jsonl(tmp_path / "sessions.jsonl", sample_sessions())
    requests = write_jsonl(
        tmp_path / "requests.jsonl",
        [{"request_id": f"r{u}", "subject_id": f"u{u:03d}", "requested_at": 1_767_225_600_000} for u in (5, 9)],
    )
    flags = [f"--sessions=file://{sessions}", f"--requests=file://{requests}", "--archive_partition_s=3600",
             "--dedupe=off"]  # fmt: skip
    direct = tmp_path / "direct"
    assert main(["run", f"--output={direct}", f"--registry=embedded://{tmp_path}/direct.sqlite", *flags]) == 0
    out = tmp_path / "detached"
    done = run_in_netns(
        [sys.executable, "-m", "tests.helpers.detached_job", str(out),
         f"--registry=embedded://{tmp_path}/detached.sqlite", *flags],
        timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["returncode"] == 0, report["stderr_tail"]
    assert "not waiting (--detach)" in report["stdout"] and report["runner"] == "PortableRunner"
    assert report["state_at_submit"] in ("STOPPED", "STARTING", "RUNNING"), report
    assert report["states"][-1] == "DONE", report
    assert not (out / "summary.json").exists()  # the figures of a detached job are the runner's
    assert archive_counts(out) == archive_counts(direct)
    assert analytics_rows(out) == analytics_rows(direct) == aggregate_archive(out)
    assert len(list((out / "manifests").rglob("*.json"))) == len(list((direct / "manifests").rglob("*.json"))) == 2
    assert not {"u005", "u009"} & set(archive_counts(out))
