"""Cancel a streaming Flink job after a checkpoint, resume it from that checkpoint; report JSON.

Run inside a network namespace of its own (tests/integration/test_flink_streaming.py): it starts
kinesalite there (the Flink job server, also there, binds every interface), writes sessions in
three waves (before the run, while it runs, while it is stopped), and prints one JSON line: the
event ids written, the archived ones with their counts, and both runs' summaries.

    python -m tests.helpers.flink_resume WORKDIR
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from beam_rtbf.sources.kinesis import KinesisWriter, kinesis_client
from beam_rtbf.testing.kinesalite import Kinesalite
from tests.helpers.data import archive_rows

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


def create(endpoint: str, name: str, shards: int) -> None:
    client = kinesis_client(REGION, endpoint)
    client.create_stream(StreamName=name, ShardCount=shards)
    while client.describe_stream(StreamName=name)["StreamDescription"]["StreamStatus"] != "ACTIVE":
        time.sleep(0.05)


def put(endpoint: str, start: int, count: int) -> list[str]:
    now = int(time.time() * 1000)
    ids = [f"e{i}" for i in range(start, start + count)]
    lines = [json.dumps({"user_id": f"u{i % 40}", "event_id": f"e{i}", "event_time": now + i - start}).encode()
             for i in range(start, start + count)]  # fmt: skip
    assert (
        KinesisWriter("sessions", REGION, endpoint).write(lines, [f"k{i}" for i in range(start, start + count)])
        == count
    )
    return ids


def archived(out: Path) -> Counter:
    try:
        return Counter(archive_rows(str(out)).column("event_id").to_pylist())
    except Exception:  # noqa: BLE001 - nothing written yet
        return Counter()


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.25)


def start_run(work: Path, endpoint: str, *extra: str) -> subprocess.Popen:
    base = f"?region={REGION}&endpoint={endpoint}"
    argv = [
        sys.executable, "-m", "beam_rtbf.cli", "run", "--runner=flink-local", "--streaming",
        "--filter_strategy=state", f"--output={work / 'out'}", f"--registry=embedded://{work / 'r.sqlite'}",
        f"--sessions=kinesis://sessions{base}", f"--requests=kinesis://requests{base}", "--dedupe=off",
        "--window_s=1", "--archive_partition_s=60", "--checkpointing_interval=2000", "--state_backend=filesystem",
        f"--state_backend_storage_path=file://{work / 'checkpoints'}",
        "--retain_externalized_checkpoints_on_cancellation", *extra,
    ]  # fmt: skip
    log = open(work / f"run-{len(list(work.glob('run-*.log')))}.log", "w")  # noqa: SIM115 - the job's lifetime
    # A session of its own: the run and the job server it starts are one process group.
    return subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def cancel(job: subprocess.Popen) -> dict:
    job.send_signal(signal.SIGINT)
    job.wait(timeout=180)
    assert job.returncode == 0, f"exit {job.returncode}: see the run-*.log files"
    return json.loads(
        (Path(next(a for a in job.args if a.startswith("--output=")).split("=", 1)[1]) / "summary.json").read_text()
    )


def main(work: Path) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    server = Kinesalite()
    server.start()
    jobs: list[subprocess.Popen | None] = [None]
    try:
        create(server.endpoint, "sessions", 2)
        create(server.endpoint, "requests", 1)
        written = put(server.endpoint, 0, 3000)
        out = work / "out"
        job = jobs[0] = start_run(work, server.endpoint)
        wait_for(lambda: len(archived(out)) >= 3000, 400, "wave 1 archived")
        written += put(server.endpoint, 3000, 2000)  # while running
        wait_for(lambda: len(archived(out)) >= 5000, 120, "wave 2 archived")
        done_at = time.time()
        wait_for(lambda: any(os.path.getmtime(m) > done_at + 0.5 for m in glob.glob(str(work / "checkpoints" / "*" / "chk-*" / "_metadata"))),
                 60, "a checkpoint after wave 2")  # fmt: skip
        first = cancel(job)
        written += put(server.endpoint, 5000, 2000)  # while stopped
        job = jobs[0] = start_run(work, server.endpoint, f"--savepoint_path={first['resume_from']}")
        wait_for(lambda: len(archived(out)) >= 7000, 400, "wave 3 archived after the resume")
        time.sleep(3)  # anything replayed twice would show now
        second = cancel(job)
        print(json.dumps({"written": written, "archived": archived(out), "first": first, "second": second}))
    finally:
        if jobs[0] is not None and jobs[0].poll() is None:
            os.killpg(jobs[0].pid, signal.SIGKILL)  # the group of the PID this script started (with its job server)
        server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
