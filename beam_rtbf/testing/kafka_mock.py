"""librdkafka's mock Kafka cluster as a real local broker endpoint, in a process of its own.

No Kafka broker can be installed offline here; the mock cluster speaks the real
Kafka protocol (metadata, produce, fetch, consumer groups, offset commits) to
independent clients. Run as ``python -m beam_rtbf.testing.kafka_mock BROKERS``:
it prints the bootstrap servers on one line and serves until it is terminated.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def serve(brokers: int) -> None:
    from confluent_kafka import Producer

    holder = Producer({"test.mock.num.brokers": brokers, "log_level": 0})
    metadata = holder.list_topics(timeout=10)
    servers = ",".join(f"{b.host}:{b.port}" for b in sorted(metadata.brokers.values(), key=lambda b: b.id))
    print(servers, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


class KafkaMockCluster:
    """Starts the mock cluster process; ``bootstrap`` is its ``host:port,...``; stopped by its PID."""

    default_partitions = 4  # librdkafka's mock cluster creates topics with 4 partitions

    def __init__(self, brokers: int = 3) -> None:
        self.brokers = brokers
        self.process: subprocess.Popen | None = None
        self.bootstrap = ""

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "beam_rtbf.testing.kafka_mock", str(self.brokers)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        line = self.process.stdout.readline().strip()
        if not line:
            raise RuntimeError("the Kafka mock cluster did not start")
        self.bootstrap = line

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
