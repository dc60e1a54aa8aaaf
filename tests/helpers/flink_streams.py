"""A flink-local streaming run reading Kinesis (kinesalite) or Kafka (a real broker), with erasure
requests put while it runs; prints one JSON line of what was written, archived and when.

Run inside a network namespace of its own (the job server and Flink bind every interface; the
stream server runs beside them, on that namespace's loopback):

    python -m tests.helpers.flink_streams WORK {kinesis|kafka} [beam-rtbf run flags...]

Sessions come in three waves: wave 1 before any request; then requests forget ``FORGOTTEN``
subjects; wave 2 is written once every request has its manifest (the filter applies it), so
none of wave 2's sessions of a forgotten subject may reach the archive. Then the job is stopped
with a savepoint, wave 3 is written while it is stopped, and the job resumes from the savepoint:
it reads on from where it stood (wave 3 once, nothing again).
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tests.helpers.data import manifests
from tests.helpers.flink_runs import FlinkRun, archived_ids, checkpoint_flags, wait_for

USERS = 40
FORGOTTEN = [f"u{i}" for i in range(5)]
WAVE = 1500  # sessions per wave
REGION = "us-east-1"


class _Streams:
    """Create the two streams, write to them, name them as source URIs."""

    def __init__(self, kind: str, work: Path) -> None:
        self.kind = kind
        if kind == "kinesis":
            from beam_rtbf.testing.kinesalite import Kinesalite

            self.server: Any = Kinesalite()
            self.server.start()
        else:
            from beam_rtbf.testing.kafka_broker import KafkaBroker

            self.server = KafkaBroker(str(work / "kafka"))
            self.server.start()
        self._create("sessions", 2)
        self._create("requests", 1)

    def _create(self, name: str, shards: int) -> None:
        if self.kind == "kinesis":
            from beam_rtbf.sources.kinesis import kinesis_client

            client = kinesis_client(REGION, self.server.endpoint)
            client.create_stream(StreamName=name, ShardCount=shards)
            while client.describe_stream(StreamName=name)["StreamDescription"]["StreamStatus"] != "ACTIVE":
                time.sleep(0.05)
            return
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.server.bootstrap, "log_level": 0})
        admin.create_topics([NewTopic(name, shards, 1)])[name].result(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = admin.list_topics(name, timeout=10).topics.get(name)
            if found is not None and found.error is None and len(found.partitions) == shards:
                return
            time.sleep(0.1)
        raise RuntimeError(f"topic {name} has not its {shards} partitions")

    def uri(self, name: str) -> str:
        if self.kind == "kinesis":
            return f"kinesis://{name}?region={REGION}&endpoint={self.server.endpoint}"
        return f"kafka://{self.server.bootstrap}/{name}?group=rtbf-{name}"

    def write(self, name: str, records: list[bytes], keys: list[str]) -> None:
        if self.kind == "kinesis":
            from beam_rtbf.sources.kinesis import KinesisWriter

            written = KinesisWriter(name, REGION, self.server.endpoint).write(records, keys)
        else:
            from beam_rtbf.sources.kafka import KafkaWriter

            written = KafkaWriter(self.server.bootstrap, name).write(records, keys)
        assert written == len(records)

    def stop(self) -> None:
        self.server.stop()


def _sessions(first: int, count: int) -> list[dict]:
    now = int(time.time() * 1000)
    return [
        {"user_id": f"u{i % USERS}", "event_id": f"e{i}", "event_time": now + (i - first), "action": "show"}
        for i in range(first, first + count)
    ]


def _put_sessions(streams: _Streams, rows: list[dict]) -> None:
    streams.write("sessions", [json.dumps(r).encode() for r in rows], [r["event_id"] for r in rows])


def main(work: Path, kind: str, flags: list[str]) -> dict[str, Any]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    work.mkdir(parents=True, exist_ok=True)
    streams = _Streams(kind, work)
    run = None
    timings: dict[str, float] = {}
    try:
        written = _sessions(0, WAVE)
        _put_sessions(streams, written)
        run = FlinkRun(
            work, "--filter_strategy=state", f"--sessions={streams.uri('sessions')}",
            f"--requests={streams.uri('requests')}", "--window_s=1", "--archive_partition_s=60",
            f"--read_trace={work / 'trace.jsonl'}", *checkpoint_flags(work), *flags, netns=False,
        ).start()  # fmt: skip
        started = time.monotonic()
        out = run.out
        timings["wave1_archived_s"] = wait_for(lambda: len(archived_ids(out)) >= WAVE, 400, "wave 1 archived", run)
        requests = [
            {"request_id": f"r-{subject}", "subject_id": subject, "regulation": "gdpr"} for subject in FORGOTTEN
        ]
        put_at = time.time()
        streams.write("requests", [json.dumps(r).encode() for r in requests], [r["subject_id"] for r in requests])
        timings["manifests_s"] = wait_for(
            lambda: len(manifests(str(out))) >= len(requests), 300, "a manifest for every request", run
        )
        wave2 = _sessions(WAVE, WAVE)
        _put_sessions(streams, wave2)
        written += wave2
        must = {r["event_id"] for r in written if r["user_id"] not in FORGOTTEN}
        timings["wave2_archived_s"] = wait_for(lambda: must <= set(archived_ids(out)), 300, "wave 2 archived", run)
        windows_while_running = len(glob.glob(str(out / "analytics" / "**" / "*.jsonl"), recursive=True))
        time.sleep(5)  # a replay or a late copy would show now
        timings["run_s"] = time.monotonic() - started
        summary = run.stop()
        # Wave 3 while the job is stopped; the job resumes from its savepoint and reads on from there.
        wave3 = _sessions(2 * WAVE, WAVE)
        _put_sessions(streams, wave3)
        written += wave3
        run.kill()
        run = FlinkRun(work, *run.flags, f"--savepoint_path={summary['resume_from']}", netns=False).start()
        must = {r["event_id"] for r in written if r["user_id"] not in FORGOTTEN}
        timings["wave3_archived_after_resume_s"] = wait_for(
            lambda: must <= set(archived_ids(out)), 400, "wave 3 archived after the resume", run
        )
        time.sleep(5)
        resumed = run.stop()
        return {
            "written": written,
            "put_requests_at_ms": int(put_at * 1000),
            "manifests": manifests(str(out)),
            "archived": dict(archived_ids(out)),
            "windows_while_running": windows_while_running,
            "timings": {k: round(v, 1) for k, v in timings.items()},
            "summary": summary,
            "resumed": resumed,
        }
    finally:
        if run is not None:
            run.kill()
        streams.stop()


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])))
