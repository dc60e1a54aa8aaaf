"""job_servers: which runs get a local job server, the launcher jar, and the errors a user sees."""

from __future__ import annotations

import threading
import zipfile
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions, SparkRunnerOptions

from beam_rtbf import job_servers
from beam_rtbf.cli import job_spec, main
from beam_rtbf.job_servers import JOB_SERVERS, JobServerUnavailable, provide_job_server_jar, write_launcher_jar


@pytest.fixture
def fetched(monkeypatch) -> list[str]:
    """job_server_jar replaced by a recorder: which engines a run would fetch."""
    calls: list[str] = []

    def fake(engine: str):
        calls.append(engine)
        return f"/cache/{engine}.jar"

    monkeypatch.setattr(job_servers, "job_server_jar", fake)
    return calls


@pytest.mark.parametrize(
    "argv, engine, option",
    [
        (["--runner=FlinkRunner", "--flink_master=[local]"], "flink", "flink_job_server_jar"),
        (["--runner=SparkRunner", "--spark_master_url=local[2]"], "spark", "spark_job_server_jar"),
        (["--runner=SparkRunner"], "spark", "spark_job_server_jar"),  # Beam's default master is local[4]
    ],
)
def test_a_local_master_with_no_jar_gets_the_fetched_one(argv, engine, option, fetched):
    options = PipelineOptions(argv)
    assert provide_job_server_jar(options) == f"/cache/{engine}.jar"
    assert fetched == [engine]
    assert options.get_all_options()[option] == f"/cache/{engine}.jar"


@pytest.mark.parametrize(
    "argv",
    [
        ["--runner=FlinkRunner", "--flink_master=flink-jm:8081"],  # a cluster: its job server is its own
        ["--runner=FlinkRunner", "--flink_master=[local]", "--flink_submit_uber_jar"],
        ["--runner=SparkRunner", "--spark_master_url=spark://m:7077"],
        ["--runner=SparkRunner", "--spark_submit_uber_jar", "--spark_rest_url=http://m:6066"],
        ["--runner=PortableRunner", "--job_endpoint=embed"],
        [],
    ],
)
def test_other_runs_fetch_nothing(argv, fetched):
    options = PipelineOptions(argv)
    assert provide_job_server_jar(options) is None and fetched == []


def test_a_jar_given_is_used_as_is(fetched):
    options = PipelineOptions(["--runner=FlinkRunner", "--flink_master=[local]", "--flink_job_server_jar=/mine.jar"])
    assert provide_job_server_jar(options) == "/mine.jar" and fetched == []
    assert options.view_as(FlinkRunnerOptions).flink_job_server_jar == "/mine.jar"
    spark = PipelineOptions(["--runner=SparkRunner", "--spark_job_server_jar=/s.jar"])
    assert (
        provide_job_server_jar(spark) == "/s.jar" and spark.view_as(SparkRunnerOptions).spark_job_server_jar == "/s.jar"
    )


def test_the_launcher_jar_names_the_main_class_and_a_class_path_relative_to_it(tmp_path):
    entries = [f"lib/dependency-number-{i:03d}-with-a-long-name-1.2.3.jar" for i in range(150)]
    write_launcher_jar(tmp_path / "launcher.jar", "org.example.Main", entries)
    with zipfile.ZipFile(tmp_path / "launcher.jar") as jar:
        assert sorted(jar.namelist()) == ["META-INF/MANIFEST.MF", "simplelogger.properties"]
        manifest = jar.read("META-INF/MANIFEST.MF").decode()
    assert max(len(line.encode()) for line in manifest.splitlines()) <= 72  # the JAR spec's line limit
    unfolded = manifest.replace("\n ", "")
    assert "Main-Class: org.example.Main\n" in unfolded
    assert unfolded.split("Class-Path: ")[1].split() == entries
    assert not (tmp_path / "launcher.tmp").exists()


def test_no_maven_and_no_download_is_one_line_naming_the_option(tmp_path, monkeypatch):
    monkeypatch.setenv("RTBF_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(job_servers, "_download", lambda server, into: False)
    monkeypatch.setattr(job_servers.shutil, "which", lambda name: None)
    with pytest.raises(JobServerUnavailable) as caught:
        job_servers.job_server_jar("spark")
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        "cannot fetch the spark job server: its jar is not served and Maven (mvn) is not installed; install "
        f"Maven, or pass --spark_job_server_jar PATH to {JOB_SERVERS['spark'].name}.jar"
    )
    left = sorted(p.name for p in (tmp_path / "job-servers").iterdir())
    assert left == [f".{JOB_SERVERS['spark'].name}.lock"]  # nothing half-fetched left behind, only the lock


def test_a_killed_fetchs_staging_folder_is_removed_by_the_next_fetch(tmp_path, monkeypatch):
    """kill -9 during a fetch leaves a hidden staging folder; the next fetch (holding the lock) removes it."""
    monkeypatch.setenv("RTBF_CACHE_DIR", str(tmp_path))
    server = JOB_SERVERS["spark"]
    leftover = tmp_path / "job-servers" / f".{server.name}-k1ll3d"
    (leftover / "lib").mkdir(parents=True)
    (leftover / "lib" / "half.jar").write_bytes(b"PK")

    def assemble(server, into):
        (into / "launcher.jar").write_bytes(b"PK")

    monkeypatch.setattr(job_servers, "_download", lambda server, into: False)
    monkeypatch.setattr(job_servers, "_assemble", assemble)
    jar = job_servers.job_server_jar("spark")
    assert jar == tmp_path / "job-servers" / server.name / "launcher.jar"
    assert sorted(p.name for p in (tmp_path / "job-servers").iterdir()) == sorted([server.name, f".{server.name}.lock"])


def test_a_second_fetch_waits_for_the_first_and_fetches_nothing(tmp_path, monkeypatch):
    """Two processes asking at once: one fetches, the other waits on the lock and finds the jar."""
    monkeypatch.setenv("RTBF_CACHE_DIR", str(tmp_path))
    server = JOB_SERVERS["spark"]
    started, release, fetches = threading.Event(), threading.Event(), []

    def assemble(server, into):
        fetches.append(into.name)
        started.set()
        release.wait(10)
        (into / "launcher.jar").write_bytes(b"PK")

    monkeypatch.setattr(job_servers, "_download", lambda server, into: False)
    monkeypatch.setattr(job_servers, "_assemble", assemble)
    results: list[Path] = []
    first = threading.Thread(target=lambda: results.append(job_servers.job_server_jar("spark")))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: results.append(job_servers.job_server_jar("spark")))
    second.start()
    second.join(0.5)
    assert second.is_alive()  # waiting on the lock, not fetching
    release.set()
    first.join(10), second.join(10)
    assert len(fetches) == 1 and results == [tmp_path / "job-servers" / server.name / "launcher.jar"] * 2


def test_the_local_profiles_dry_run(capsys):
    spec = job_spec(["run", "--runner=flink-local", "--dry-run"], env={})
    settings = {dest: s.value for dest, s in spec.settings.items()}
    assert settings["runner"] == "FlinkRunner" and settings["flink_master"] == "[local]"
    assert settings["environment_type"] == "LOOPBACK" and settings["flink_version"] == "1.19"
    files = ["--sessions=file:///d/s-*.jsonl", "--requests=file:///d/r-*.jsonl"]
    assert main(["run", "--runner=spark-local", *files, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("beam-rtbf run: dry run, runner profile spark-local\n")
    assert "--spark_master_url=local[2]" in out


def test_the_module_command_refuses_an_unknown_engine(capsys):
    assert job_servers.main(["flnk"]) == 2
    assert (
        capsys.readouterr().err
        == "beam_rtbf.job_servers: no job server for 'flnk'; known: flink, kafka-expansion, spark\n"
    )
