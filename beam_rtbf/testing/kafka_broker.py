"""A real Apache Kafka broker for tests: KRaft (one node, broker + controller), loopback only, stopped by its PID.

The jars come from Maven (``org.apache.kafka:kafka_2.13`` with its runtime
dependencies and a log4j binding) into ``.tools/kafka-<version>/lib`` of the
repo; ``scripts/test.sh`` fetches them with
``python -m beam_rtbf.testing.kafka_broker fetch`` so that tests never download.
Java 17 (``java`` on PATH) runs them.

Every listener (the clients' PLAINTEXT one, the KRaft CONTROLLER one, the
optional SASL_PLAINTEXT one) is bound to 127.0.0.1 on a free port; the broker's
log (log4j) goes to ``broker.log`` in the data dir. ``restart()`` stops and starts
on the same ports and the same log dir. With ``scram_users`` the broker has a
SASL_PLAINTEXT listener (``sasl_bootstrap``) that takes SCRAM-SHA-256; the
credentials are written at format time (``--add-scram``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from beam_rtbf.testing.redis_server import free_port, stop_process, wait_listening

__all__ = ["KAFKA_VERSION", "KafkaBroker", "kafka_lib_dir", "fetch"]

KAFKA_VERSION = "4.1.1"
_LOG4J_VERSION = "2.24.3"  # what kafka_2.13 4.1.1 depends on; its SLF4J 1.7 binding below
_CLUSTER_ID = "YmVhbS1ydGJmLWthZmthLQ"  # any 16 bytes, base64url: one fixed id, so a restart finds its own storage
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_MISSING = (
    "the Kafka {version} jars are not in {path}: python -m beam_rtbf.testing.kafka_broker fetch (scripts/test.sh does)"
)

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>beam-rtbf</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def kafka_lib_dir(version: str = KAFKA_VERSION) -> str:
    """``$KAFKA_LIB_DIR`` or ``.tools/kafka-<version>/lib`` of the repo (this path is what ``fetch`` fills)."""
    return os.environ.get("KAFKA_LIB_DIR") or os.path.join(_REPO, ".tools", f"kafka-{version}", "lib")


def _has_jars(lib: str, version: str) -> bool:
    return os.path.isfile(os.path.join(lib, f"kafka_2.13-{version}.jar"))


def fetch(version: str = KAFKA_VERSION, lib: str | None = None) -> str:
    """Resolve the broker's jars with Maven into ``lib`` (all at once: a failed fetch leaves nothing behind)."""
    lib = lib or kafka_lib_dir(version)
    if _has_jars(lib, version):
        return lib
    if shutil.which("mvn") is None:
        raise RuntimeError("mvn is not installed: apt-get install -y maven")
    parent = os.path.dirname(lib)
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent) as work:
        with open(os.path.join(work, "pom.xml"), "w") as pom:
            pom.write(_POM.format(kafka=version, log4j=_LOG4J_VERSION))
        staged = os.path.join(work, "lib")
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-Dstyle.color=never",
                "-f",
                os.path.join(work, "pom.xml"),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staged}",
            ],
            check=True,
        )
        if not _has_jars(staged, version):
            raise RuntimeError(f"mvn did not bring kafka_2.13-{version}.jar")
        shutil.rmtree(lib, ignore_errors=True)
        os.rename(staged, lib)
    return lib


class KafkaBroker:
    """One ``kafka.Kafka`` JVM on loopback ports; ``bootstrap`` is ``127.0.0.1:PORT`` (PLAINTEXT)."""

    default_partitions = 4  # num.partitions of auto-created topics: the same as librdkafka's mock cluster

    def __init__(
        self,
        data_dir: str,
        scram_users: dict[str, str] | None = None,
        version: str = KAFKA_VERSION,
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.java = shutil.which("java")
        if self.java is None:
            raise RuntimeError("java is not installed: apt-get install -y openjdk-17-jre-headless")
        self.lib = kafka_lib_dir(version)
        if not _has_jars(self.lib, version):
            raise RuntimeError(_MISSING.format(version=version, path=self.lib))
        self.version = version
        self.data_dir = os.path.abspath(data_dir)
        self.scram_users = dict(scram_users or {})
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.port = free_port()
        self.controller_port = free_port()
        self.sasl_port = free_port() if self.scram_users else None
        self.process: subprocess.Popen | None = None
        self.started_in_s: float | None = None  # the last start's time to a metadata answer
        self._formatted = False
        os.makedirs(self.data_dir, exist_ok=True)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        if self.sasl_port is None:
            raise RuntimeError("this broker has no SASL listener: pass scram_users")
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def log_file(self) -> str:
        return os.path.join(self.data_dir, "broker.log")

    def _write_config(self) -> str:
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}", f"CONTROLLER://127.0.0.1:{self.controller_port}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        if self.sasl_port is not None:
            listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}")
            advertised.append(f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}")
        lines = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "log.dirs": os.path.join(self.data_dir, "logs"),
            "metadata.log.dir": os.path.join(self.data_dir, "metadata"),
            "num.partitions": str(self.default_partitions),
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "controlled.shutdown.enable": "true",
        }
        if self.sasl_port is not None:
            lines["sasl.enabled.mechanisms"] = "SCRAM-SHA-256"
            lines["listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        path = os.path.join(self.data_dir, "server.properties")
        with open(path, "w") as out:
            out.writelines(f"{key}={value}\n" for key, value in lines.items())
        with open(os.path.join(self.data_dir, "log4j2.properties"), "w") as out:
            out.write(_LOG4J.format(log=self.log_file))
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            self.java,
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseSerialGC",  # a test broker on a small machine: few GC threads,
            "-XX:TieredStopAtLevel=1",  # and the quick JIT only (a shorter start-up, less CPU)
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile={os.path.join(self.data_dir, 'log4j2.properties')}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            os.path.join(self.lib, "*"),
            main,
            *args,
        ]

    def _format(self, config: str) -> None:
        args = ["format", "--config", config, "--cluster-id", _CLUSTER_ID, "--ignore-formatted"]
        for user, password in self.scram_users.items():
            args += ["--add-scram", f"SCRAM-SHA-256=[name={user},password={password}]"]
        done = subprocess.run(
            self._java("kafka.tools.StorageTool", *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=self.start_timeout_s,
        )
        if done.returncode != 0:
            last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"kafka storage format failed ({done.returncode}): {last}")
        self._formatted = True

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("the Kafka broker is already running")
        began = time.monotonic()
        config = self._write_config()
        if not self._formatted:
            self._format(config)
        with open(os.path.join(self.data_dir, "broker.out"), "ab") as out:
            self.process = subprocess.Popen(
                self._java("kafka.Kafka", config), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            self._wait_ready(began)
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.monotonic() - began

    def _wait_ready(self, began: float) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = began + self.start_timeout_s
        if not wait_listening(self.process, self.port, deadline):
            if self.process.poll() is not None:
                raise RuntimeError(f"the Kafka broker exited with {self.process.returncode}; see {self.log_file}")
            raise RuntimeError(
                f"the Kafka broker did not listen within {self.start_timeout_s:.0f} s; see {self.log_file}"
            )
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Kafka broker exited with {self.process.returncode}; see {self.log_file}")
            try:
                metadata = admin.list_topics(timeout=max(0.5, min(5.0, deadline - time.monotonic())))
            except Exception:  # noqa: BLE001 - not answering yet
                time.sleep(0.1)
                continue
            if metadata.brokers and metadata.controller_id >= 0:
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"the Kafka broker did not answer a metadata request within {self.start_timeout_s:.0f} s; see {self.log_file}"
        )

    def stop(self, kill: bool = False) -> None:
        """Stop the process this object started: SIGTERM (a controlled shutdown), SIGKILL after the timeout."""
        if self.process is None:
            return
        stop_process(self.process, kill, self.stop_timeout_s)
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same ports and the same log dir."""
        self.stop()
        self.start()


if __name__ == "__main__":
    if sys.argv[1:2] != ["fetch"]:
        sys.exit("usage: python -m beam_rtbf.testing.kafka_broker fetch [VERSION]")
    print(fetch(sys.argv[2] if len(sys.argv) > 2 else KAFKA_VERSION))
