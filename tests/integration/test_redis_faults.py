"""Redis stopped mid-stream: nothing unfiltered gets through, and the run completes when it returns."""

from __future__ import annotations

import threading
import time

import pytest

from beam_rtbf.cli import main
from beam_rtbf.pipeline import run
from beam_rtbf.records import ErasureRequest, parse_time_ms
from beam_rtbf.registry import open_registry
from beam_rtbf.testing.redis_server import RedisServer, free_port
from tests.helpers.data import archive_rows, manifests

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FORGOTTEN = [f"u{i:07d}" for i in range(0, 60, 3)]


@pytest.mark.parametrize("strategy", ["state", "lookup"])
def test_redis_outage_mid_stream_holds_sessions_and_completes(tmp_path, strategy):
    server = RedisServer(str(tmp_path / "redis"))
    server.start()
    try:
        with open_registry(server.url) as registry:
            registry.add([ErasureRequest(f"pre-{s}", s, 1) for s in FORGOTTEN])

        outage = {}

        def stop_then_restart() -> None:
            time.sleep(3.0)
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
        out = tmp_path / "out"
        summary = run(
            [
                f"--output={out}",
                f"--registry={server.url}",
                f"--filter_strategy={strategy}",
                "--refresh_interval_s=0.3",
                "--max_staleness_s=1",
                "--window_s=1",
                "--sessions=synthetic://sessions?users=60&rate=3000&duration_s=10&seed=11",
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


def test_unreachable_registry_is_one_clear_error_from_the_command(tmp_path, capsys):
    code = None
    with pytest.raises(SystemExit) as exit_info:
        code = main(["run", f"--output={tmp_path}", f"--registry=redis://127.0.0.1:{free_port()}/0"])
    assert code is None
    message = str(exit_info.value)
    assert message.startswith("beam-rtbf: deletion registry unavailable: Redis at redis://127.0.0.1:")
    assert "unreachable" in message and "Traceback" not in message
