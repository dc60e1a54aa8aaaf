"""Beam's Flink and Spark job servers on one machine: fetched once into a cache, started by Beam.

``beam-rtbf run --runner flink-local`` (or ``spark-local``) runs the graph on a real Flink
(embedded, ``--flink_master=[local]``) or Spark (``local[2]``) through Beam's own ``FlinkRunner``
/ ``SparkRunner``, which start the job server jar given as ``--flink_job_server_jar`` /
``--spark_job_server_jar``. When none is given this module provides one, once, into
``$RTBF_CACHE_DIR`` (default ``~/.cache/beam-rtbf``):

1. the job server jar Beam publishes for the tested runner version, downloaded by Beam's own
   jar download code, if the Maven repository serves it (quiet about it: one warning line); else
2. the same runner assembled from its published modules with Maven (``mvn`` on the PATH): the
   runner jar and its dependencies in ``lib/``, and a small launcher jar whose manifest names the
   job server's main class and that class path (what the shaded job server jar contains).

Versions: the Python SDK is newer (2.77) than the newest Beam Java runner whose modules resolve
from the Maven repository this project can reach (2.62.0; see JOB_SERVERS). The Job API and the
Fn API between them are stable, and the integration tests check that this pairing gives outputs
identical to the direct runner. ``--flink_job_server_jar PATH`` uses a jar already downloaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["JobServer", "JOB_SERVERS", "JobServerUnavailable", "cache_dir", "job_server_jar", "provide_job_server_jar"]

_LOGGER = logging.getLogger(__name__)

LOCAL_FLINK_MASTERS = ("[local]",)


class JobServerUnavailable(ValueError):
    """No job server jar could be had: a user error with one line saying what to do (exit 2)."""


@dataclasses.dataclass(frozen=True)
class JobServer:
    """One engine's job server: the Beam runner module and what the shaded jar would add to it."""

    engine: str  # "flink" / "spark"
    beam_version: str
    runner_artifact: str  # org.apache.beam:<this>:<beam_version>, the runner with its job server driver
    job_server_artifact: str  # the shaded jar Beam publishes for the same runner
    main_class: str
    engine_version: str  # what runs the job: "Flink 1.19.0", "Spark 3.5.1"
    extra: tuple[str, ...] = ()  # group:artifact:version the shaded jar bundles (engine 'provided' deps)
    excluded_groups: tuple[str, ...] = ()  # dependency groups left out (optional ones from unreachable repositories)
    downloadable: bool = True  # whether Beam's published jar is the same thing (else: always assembled)
    takes_jar: bool = True  # whether --<engine>_job_server_jar can point at a jar you have

    @property
    def name(self) -> str:
        return f"{self.job_server_artifact}-{self.beam_version}"


# The tested pairs. 2.62.0 is the newest Beam Java release whose Flink and Spark runner modules
# resolve with all their dependencies from the Maven repository this project reaches.
_SLF4J = "org.slf4j:slf4j-simple:1.7.30"  # the job server's log binding (levels in the launcher jar)
JOB_SERVERS: dict[str, JobServer] = {
    "flink": JobServer(
        engine="flink",
        beam_version="2.62.0",
        runner_artifact="beam-runners-flink-1.19",
        job_server_artifact="beam-runners-flink-1.19-job-server",
        main_class="org.apache.beam.runners.flink.FlinkJobServerDriver",
        engine_version="Flink 1.19.0",
        extra=(_SLF4J,),
    ),
    "spark": JobServer(
        engine="spark",
        beam_version="2.62.0",
        runner_artifact="beam-runners-spark-3",
        job_server_artifact="beam-runners-spark-3-job-server",
        main_class="org.apache.beam.runners.spark.SparkJobServerDriver",
        engine_version="Spark 3.5.1",
        extra=(
            "org.apache.spark:spark-core_2.12:3.5.1",
            "org.apache.spark:spark-streaming_2.12:3.5.1",
            "org.apache.spark:spark-sql_2.12:3.5.1",
        ),
    ),
    # Beam's Java KafkaIO behind an expansion service, and the Java SDK harness as a worker pool
    # (EXTERNAL environment, as the Kubernetes deployment runs SDK workers) for the cross-language
    # ReadFromKafka on Flink (beam_rtbf/java_kafka.py). 2.73.0 is the newest Beam Java release whose
    # modules resolve here; its KafkaIO accepts every field the 2.77 Python SDK sends (2.62's does not).
    # io.confluent (schema registry deserializers, an optional extra) is not in the reachable repository.
    "kafka-expansion": JobServer(
        engine="kafka-expansion",
        beam_version="2.73.0",
        runner_artifact="beam-sdks-java-io-kafka",
        job_server_artifact="beam-sdks-java-io-kafka-expansion-service",
        main_class="org.apache.beam.sdk.expansion.service.ExpansionService",
        engine_version="KafkaIO with kafka-clients 3.9.1",
        extra=(
            "org.apache.beam:beam-sdks-java-expansion-service:2.73.0",
            "org.apache.beam:beam-sdks-java-harness:2.73.0",
            "org.apache.kafka:kafka-clients:3.9.1",
            "com.github.jbellis:jamm:0.4.0",  # the harness measures object sizes with it (the container ships it)
            "org.slf4j:slf4j-simple:2.0.16",
        ),
        excluded_groups=("io.confluent",),
        downloadable=False,
        takes_jar=False,
    ),
}

# What Flink and Spark reach into by reflection on Java 17 (Kryo, Netty, off-heap buffers), opened
# by the launcher jar's manifest (a JVM started with -jar honours Add-Opens there).
_ADD_OPENS = tuple(
    f"java.base/{package}"
    for package in (
        "java.io", "java.lang", "java.lang.invoke", "java.lang.reflect", "java.math", "java.net", "java.nio",
        "java.text", "java.time", "java.util", "java.util.concurrent", "java.util.concurrent.atomic",
        "java.util.concurrent.locks", "sun.nio.ch", "sun.nio.cs", "sun.security.action", "sun.util.calendar",
    )
)  # fmt: skip
_LOG_LEVELS = b"org.slf4j.simpleLogger.defaultLogLevel=warn\norg.slf4j.simpleLogger.logFile=System.err\n"


def cache_dir() -> Path:
    """Where job servers are kept between runs: ``$RTBF_CACHE_DIR``, else ``~/.cache/beam-rtbf``."""
    root = os.environ.get("RTBF_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "beam-rtbf"
    )
    return Path(root) / "job-servers"


def job_server_jar(engine: str, cache: Path | None = None) -> Path:
    """The job server jar of ``engine`` ("flink", "spark"), fetched into ``cache`` the first time."""
    server = JOB_SERVERS[engine]
    home = (cache or cache_dir()) / server.name
    for jar in (home / f"{server.name}.jar", home / "launcher.jar"):
        if jar.is_file():
            return jar
    home.parent.mkdir(parents=True, exist_ok=True)
    with _fetch_lock(home.parent / f".{server.name}.lock"):
        if not any(jar.is_file() for jar in (home / f"{server.name}.jar", home / "launcher.jar")):
            _fetch(engine, server, home)
    return job_server_jar(engine, cache)


@contextlib.contextmanager
def _fetch_lock(path: Path) -> Iterator[None]:
    """One fetch of a job server at a time per cache: a second process waits, then finds it there."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fetch(engine: str, server: JobServer, home: Path) -> None:
    """Download or assemble into a hidden staging folder, then rename it into place (all or nothing).

    Runs under the fetch lock, so any staging folder of this server still there is a killed
    fetch's leftover: removed first.
    """
    for leftover in home.parent.glob(f".{server.name}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    _LOGGER.warning(
        "beam-rtbf: fetching the %s job server (Beam %s, %s) into %s, once (150-250 MB)%s",
        engine, server.beam_version, server.engine_version, home, f"; --{engine}_job_server_jar PATH uses a jar you already have" if server.takes_jar else "",
    )  # fmt: skip
    staging = Path(tempfile.mkdtemp(prefix=f".{server.name}-", dir=home.parent))
    try:
        if not (server.downloadable and _download(server, staging)):
            _assemble(server, staging)
        staging.rename(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download(server: JobServer, into: Path) -> bool:
    """The shaded job server jar, through Beam's own jar download (its repository, its cache rules)."""
    from apache_beam.utils.subprocess_server import JavaJarServer

    url = JavaJarServer.path_to_maven_jar(server.job_server_artifact, "org.apache.beam", server.beam_version)
    beam_log = logging.getLogger(JavaJarServer.__module__)
    level = beam_log.level
    beam_log.setLevel(logging.ERROR)  # its two-paragraph warning per URL tried; ours said it once
    try:
        fetched = JavaJarServer.local_jar(url, cache_dir=str(into / "download"))
    except Exception as exc:  # noqa: BLE001 - any failure means: not served, say what was tried
        _LOGGER.info("beam-rtbf: %s.jar not downloaded: %s", server.name, exc)
        return False
    finally:
        beam_log.setLevel(level)
        shutil.rmtree(into / "download", ignore_errors=True)
    os.replace(fetched, into / f"{server.name}.jar")
    return True


def _assemble(server: JobServer, into: Path) -> None:
    """The runner module and its dependencies with Maven, plus a launcher jar naming the main class."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JobServerUnavailable(
            f"cannot fetch the {server.engine} job server: its jar is not served and Maven (mvn) is not "
            f"installed; install Maven"
            + (f", or pass --{server.engine}_job_server_jar PATH to {server.name}.jar" if server.takes_jar else "")
        )
    deps = [f"org.apache.beam:{server.runner_artifact}:{server.beam_version}", *server.extra]
    (into / "pom.xml").write_text(_pom(server, deps))
    done = subprocess.run(
        [mvn, "-q", "-B", "-f", str(into / "pom.xml"), "dependency:copy-dependencies",
         f"-DoutputDirectory={into / 'lib'}", "-DincludeScope=runtime"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        errors = [line for line in done.stdout.splitlines() if "ERROR" in line] or done.stderr.splitlines()
        raise JobServerUnavailable(
            f"cannot fetch the {server.engine} job server with Maven: {(errors or ['no output'])[0].strip()}"
        )
    jars = sorted(p.name for p in (into / "lib").glob("*.jar"))
    write_launcher_jar(into / "launcher.jar", server.main_class, [f"lib/{name}" for name in jars])


def _pom(server: JobServer, coordinates: list[str]) -> str:
    exclusions = "".join(
        f"<exclusion><groupId>{group}</groupId><artifactId>*</artifactId></exclusion>"
        for group in server.excluded_groups
    )
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version>"
        f"<exclusions>{exclusions}</exclusions></dependency>"
        for g, a, v in (c.split(":") for c in coordinates)
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        f"<groupId>beam-rtbf</groupId><artifactId>{server.name}</artifactId><version>1</version>"
        f"<dependencies>{deps}</dependencies></project>\n"
    )


def write_launcher_jar(path: Path, main_class: str, class_path: list[str]) -> None:
    """A jar of nothing but a manifest (main class, opened packages, class path relative to it) and log levels."""
    lines = [
        "Manifest-Version: 1.0",
        f"Main-Class: {main_class}",
        "Add-Opens: " + " ".join(_ADD_OPENS),
        "Class-Path: " + " ".join(class_path),
    ]
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", "".join(_folded(line) for line in lines))
        jar.writestr("simplelogger.properties", _LOG_LEVELS)
    os.replace(tmp, path)


def _folded(line: str) -> str:
    """A manifest line folded as the JAR spec says: at most 72 bytes a line, continuations start with a space."""
    data, out, width = line.encode(), [], 72
    while len(data) > width:
        out.append(data[:width])
        data, width = data[width:], 71
    out.append(data)
    return b"\n ".join(out).decode() + "\n"


def provide_job_server_jar(options: PipelineOptions) -> str | None:
    """Fill ``--flink_job_server_jar`` / ``--spark_job_server_jar`` for a local master that has none.

    Only for the masters this machine runs itself (Flink ``[local]``, Spark ``local[N]``): a
    cluster's job server is the cluster's. Returns the jar used, or None when none was needed.
    """
    from apache_beam.options.pipeline_options import FlinkRunnerOptions, SparkRunnerOptions, StandardOptions

    runner = options.view_as(StandardOptions).runner or ""
    if runner.lower() in ("flinkrunner", "flink"):
        flink = options.view_as(FlinkRunnerOptions)
        if flink.flink_master in LOCAL_FLINK_MASTERS and not flink.flink_submit_uber_jar:
            if not flink.flink_job_server_jar:
                flink.flink_job_server_jar = str(job_server_jar("flink"))
            return flink.flink_job_server_jar
    if runner.lower() in ("sparkrunner", "spark"):
        spark = options.view_as(SparkRunnerOptions)
        if spark.spark_master_url.startswith("local") and not spark.spark_submit_uber_jar:
            if not spark.spark_job_server_jar:
                spark.spark_job_server_jar = str(job_server_jar("spark"))
            return spark.spark_job_server_jar
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m beam_rtbf.job_servers [flink] [spark]``: fetch now (e.g. in an image build); print the jars."""
    import sys

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        for engine in argv if argv is not None else sys.argv[1:] or sorted(JOB_SERVERS):
            if engine not in JOB_SERVERS:
                raise JobServerUnavailable(f"no job server for {engine!r}; known: {', '.join(sorted(JOB_SERVERS))}")
            print(job_server_jar(engine))
    except JobServerUnavailable as exc:
        print(f"beam_rtbf.job_servers: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
