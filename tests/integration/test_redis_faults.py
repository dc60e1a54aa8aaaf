"""Redis stopped mid-stream: nothing unfiltered gets through, and the run completes when it returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import apache_beam as beam
import pytest

from beam_rtbf.cli import main
from beam_rtbf.manifests.build import WriteManifests, manifest_path
from beam_rtbf.pipeline import run
from beam_rtbf.records import ErasureRequest, parse_time_ms
from beam_rtbf.registry import open_registry
from beam_rtbf.testing.redis_server import RedisServer, free_port
from tests.helpers.data import archive_rows, manifests

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FORGOTTEN = [f"u{i:07d}" for i in range(0, 60, 3)]


@pytest.mark.parametrize("strategy", ["state", "lookup"])
def test_redis_outage_mid_stream_holds_sessions_and_completes(tmp_path, strategy):
    server = RedisServer(str(tmp_path / "redis"))
    server.start()
    try:
        with open_registry(server.url) as registry:
            registry.add([ErasureRequest(f"pre-{s}", s, 1) for s in FORGOTTEN])

        outage = {}

        out = tmp_path / "out"

        def stop_then_restart() -> None:
            # Mid-stream, whatever the machine's load: once the first archive file is written.
            deadline = time.monotonic() + 120
            while not list(out.glob("archive/dt=*/**/*.parquet")) and time.monotonic() < deadline:
                time.sleep(0.1)
            server.stop()
            outage["stopped"] = time.monotonic()
            time.sleep(3.0)
            server.start()
            outage["restarted"] = time.monotonic()

        # Requests arrive before the outage (a file); during it only the session path runs, so
        # the state filter must hold batches and the lookup filter must wait.
        requests = tmp_path / "requests.jsonl"
        requests.write_text(
            "".join(f'{{"request_id": "late-{i}", "subject_id": "u{i:07d}", "requested_at": 1}}\n' for i in (1, 2))
        )
        chaos = threading.Thread(target=stop_then_restart)
        chaos.start()
        summary = run(
            [
                f"--output={out}",
                f"--registry={server.url}",
                f"--filter_strategy={strategy}",
                "--refresh_interval_s=0.3",
                "--max_staleness_s=1",
                "--window_s=1",
                "--sessions=synthetic://sessions?users=60&rate=3000&duration_s=15&seed=11",
                f"--requests=file://{requests}",
            ]
        )
        chaos.join()
        assert "stopped" in outage and "restarted" in outage

        assert summary["sessions_in"] > 20_000
        assert summary["sessions_in"] == summary["clean"] + summary["suppressed"] + summary["dead_lettered"]
        assert summary["registry_errors"] > 0
        if strategy == "state":
            assert summary["sessions_held"] > 0  # held back while the set was stale, then released
        archived = archive_rows(str(out))
        users = archived.column("user_id").to_pylist()
        assert set(FORGOTTEN).isdisjoint(users)
        # Sessions of the file's subjects may pass only before their request took effect.
        times = archived.column("event_time_ms").to_pylist()
        found = manifests(str(out))
        assert sorted(found) == ["late-1", "late-2"]
        for manifest in found.values():
            effective = parse_time_ms(manifest["effective_at"])
            subject = manifest["subject_ids"][0]
            assert [t for u, t in zip(users, times) if u == subject and t > effective] == []
        assert archived.num_rows == summary["clean"]
        assert summary["requests_accepted"] == 2
        with open_registry(server.url) as registry:
            assert registry.size() == len(FORGOTTEN) + 2
    finally:
        server.stop()


def _run_command(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT}
    command = [sys.executable, "-m", "beam_rtbf.cli", "run", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_registry_down_longer_than_the_bound_is_one_clear_error_exit_2(tmp_path):
    port = free_port()
    started = time.monotonic()
    done = _run_command(
        f"--output={tmp_path / 'out'}", f"--registry=redis://127.0.0.1:{port}/0", "--registry_retry_s=2"
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "beam-rtbf run: deletion registry unavailable after retrying for 2 s (--registry_retry_s): "
        f"Redis at redis://127.0.0.1:{port}/0 unreachable: "
    ), last
    assert "registry unavailable (Redis at" in done.stderr  # each retry is logged
    assert elapsed >= 2.0
    assert not (tmp_path / "out" / "summary.json").exists()


def test_registry_down_at_start_and_back_within_the_bound_the_run_succeeds(tmp_path, capsys):
    server = RedisServer(str(tmp_path / "redis"))
    starter = threading.Timer(3.0, server.start)
    starter.start()
    try:
        out = tmp_path / "out"
        started = time.monotonic()
        code = main(
            [
                "run",
                f"--output={out}",
                f"--registry={server.url}",
                "--registry_retry_s=60",
                "--sessions=synthetic://sessions?users=50&sessions=2000&seed=3",
                "--requests=synthetic://requests?users=50&requests=4&seed=3",
            ]
        )
        assert code == 0, capsys.readouterr().err
        assert time.monotonic() - started >= 3.0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["requests_accepted"] == 4 and summary["conservation_ok"] is True
    finally:
        starter.join()
        server.stop()


@pytest.mark.parametrize("strategy", ["lookup", "state"])
def test_redis_stopped_while_manifests_are_written_loses_no_timeline_step(tmp_path, capsys, strategy):
    server = RedisServer(str(tmp_path / "redis"))
    server.start()
    outage = {}

    def stop_then_restart() -> None:
        time.sleep(5.0)
        server.stop(kill=True)
        outage["stopped"] = time.monotonic()
        time.sleep(3.0)
        server.start()
        outage["restarted"] = time.monotonic()

    chaos = threading.Thread(target=stop_then_restart)
    chaos.start()
    try:
        out = tmp_path / "out"
        code = main(
            [
                "run",
                f"--output={out}",
                f"--registry={server.url}",
                "--window_s=1",
                "--refresh_interval_s=0.3",
                "--max_staleness_s=1",
                f"--filter_strategy={strategy}",
                "--sessions=synthetic://sessions?users=400&rate=2000&duration_s=12&seed=7",
                "--requests=synthetic://requests?users=400&request_rate=15&duration_s=12&active_users=100&seed=7",
            ]
        )
        chaos.join()
        assert code == 0, capsys.readouterr().err
        assert "stopped" in outage and "restarted" in outage
        summary = json.loads((out / "summary.json").read_text())
        assert summary["requests_accepted"] >= 100 and summary["registry_errors"] >= 0
        found = manifests(str(out))
        assert len(found) == summary["requests_accepted"]
        with open_registry(server.url) as registry:
            accepted = [a.request.request_id for a in registry.requests()]
            timelines = {rid: [e.status for e in registry.timeline(rid)] for rid in accepted}
        assert sorted(accepted) == sorted(found)
        assert {rid: t for rid, t in timelines.items() if t != ["received", "suppressed"]} == {}
    finally:
        chaos.join()
        server.stop()


def _write_manifest(out, registry_url: str, accepted, retry_s: float) -> None:
    with beam.Pipeline(runner="FnApiRunner") as p:
        _ = (
            p
            | beam.Create([(accepted, 1_767_225_600_000)])
            | WriteManifests(str(out / "manifests"), str(out / "archive"), 60, [], 3600, registry_url, retry_s)
        )


def test_a_manifest_written_while_redis_is_down_still_records_its_suppressed_step(tmp_path):
    server = RedisServer(str(tmp_path / "redis"))
    server.start()
    out = tmp_path / "out"
    try:
        with open_registry(server.url) as registry:
            first, second = registry.add([ErasureRequest("req-1", "u1", 1), ErasureRequest("req-2", "u2", 1)])
        # Down while the manifest is written, back within the bound: the step waits for it.
        server.stop(kill=True)
        restart = threading.Timer(2.0, server.start)
        restart.start()
        _write_manifest(out, server.url, first, retry_s=60)
        restart.join()
        assert Path(manifest_path(str(out / "manifests"), "req-1")).exists()
        # Down longer than the bound: the bundle fails before its manifest is written...
        server.stop(kill=True)
        with pytest.raises(Exception, match="unreachable"):
            _write_manifest(out, server.url, second, retry_s=1)
        assert not Path(manifest_path(str(out / "manifests"), "req-2")).exists()
        # ...and its retry, once Redis is back, writes it and records the step.
        server.start()
        _write_manifest(out, server.url, second, retry_s=60)
        _write_manifest(out, server.url, second, retry_s=60)  # a duplicate changes nothing
        with open_registry(server.url) as registry:
            timelines = {rid: [e.status for e in registry.timeline(rid)] for rid in ("req-1", "req-2")}
        assert timelines == {"req-1": ["received", "suppressed"], "req-2": ["received", "suppressed"]}
        assert Path(manifest_path(str(out / "manifests"), "req-2")).exists()
    finally:
        server.stop()
