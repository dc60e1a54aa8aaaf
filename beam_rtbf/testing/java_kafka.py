"""Beam's Java KafkaIO from Python (the cross-language ``ReadFromKafka``), its Java side run here.

Beam's ``ReadFromKafka`` is expanded by a Java expansion service and executed by a Java SDK
harness. Beam's defaults download the ``beam-sdks-java-io-expansion-service`` jar of the SDK's
version and start a Docker container per Java worker; neither is to be had on a machine without
those downloads or Docker. This starts both from the jars ``job_servers`` assembles once
(``kafka-expansion``: Beam Java's KafkaIO, expansion service and SDK harness):

- the Java SDK harness as a **worker pool** (``ExternalWorkerService``), the way the Kubernetes
  deployment runs SDK workers in a sidecar;
- an **expansion service** whose transforms name that pool as their ``EXTERNAL`` environment.

A Flink (or any portable) runner then runs the Java read in the pool and the rest of the graph in
the Python workers. Beam's expansion service binds every interface: run it in a network namespace
of its own or behind a firewall (the tests use a namespace).

    with JavaKafkaServices() as java:  # beam_rtbf.testing.java_kafka
        p | ReadFromKafka(consumer_config=..., topics=[...], expansion_service=java.expansion_address)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from beam_rtbf.job_servers import job_server_jar
from beam_rtbf.testing.redis_server import free_port, stop_process, wait_listening

__all__ = ["JavaKafkaServices"]

_WORKER_POOL = "org.apache.beam.fn.harness.ExternalWorkerService"
_EXPANSION = "org.apache.beam.sdk.expansion.service.ExpansionService"


class JavaKafkaServices:
    """A Java worker pool and an expansion service on loopback ports, stopped by their PIDs."""

    def __init__(self, jar: str | None = None, log_dir: str | None = None, start_timeout_s: float = 90.0) -> None:
        self.java = shutil.which("java")
        if self.java is None:
            raise RuntimeError("java is not installed: apt-get install -y openjdk-17-jre-headless")
        self.jar = jar or str(job_server_jar("kafka-expansion"))
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="rtbf-java-kafka-")
        self.start_timeout_s = start_timeout_s
        self.worker_port = free_port()
        self.expansion_port = free_port()
        self._processes: list[subprocess.Popen] = []

    @property
    def expansion_address(self) -> str:
        return f"localhost:{self.expansion_port}"

    def _environment_options(self) -> list[str]:
        return ["--defaultEnvironmentType=EXTERNAL", f"--defaultEnvironmentConfig=localhost:{self.worker_port}"]

    def _start(self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None) -> None:
        log = open(Path(self.log_dir) / f"{name}.log", "wb")  # noqa: SIM115 - the process owns it
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self._processes.append(process)
        if not wait_listening(process, port, time.monotonic() + self.start_timeout_s):
            tail = (Path(self.log_dir) / f"{name}.log").read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"the Java {name} did not start on port {port}: {tail}")

    def start(self) -> JavaKafkaServices:
        # The pool reads its options from PIPELINE_OPTIONS (as the Java SDK container's worker-pool mode).
        options = {
            "options": {
                "defaultEnvironmentType": "EXTERNAL",
                "defaultEnvironmentConfig": f"localhost:{self.worker_port}",
            }
        }
        self._start(
            "worker-pool",
            [self.java, "-cp", self.jar, _WORKER_POOL],
            self.worker_port,
            env={**os.environ, "PIPELINE_OPTIONS": json.dumps(options)},
        )
        self._start(
            "expansion-service",
            [self.java, "-cp", self.jar, _EXPANSION, str(self.expansion_port), *self._environment_options()],
            self.expansion_port,
        )
        return self

    def stop(self) -> None:
        for process in reversed(self._processes):
            stop_process(process)
        self._processes.clear()

    def __enter__(self) -> JavaKafkaServices:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
