"""Runner profiles: --runner direct|flink|spark|portable -> final options and the submission command."""

from __future__ import annotations

import json
import shlex

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

import beam_rtbf.options  # noqa: F401 - registers RtbfOptions and PurgeOptions
from beam_rtbf.cli import job_spec, main
from beam_rtbf.flags import UsageError
from beam_rtbf.jobspec import load_profile
from beam_rtbf.profiles import PROFILES

TF = {
    "aws_region": {"value": "eu-west-1", "type": "string", "sensitive": False},
    "sessions_stream_name": {"value": "rtbf-sessions"},
    "requests_stream_name": {"value": "rtbf-requests"},
    "redis_primary_endpoint": {"value": "master.rtbf.abc.euw1.cache.amazonaws.com"},
    "redis_port": {"value": 6379},
    "archive_bucket": {"value": "acme-rtbf-archive"},
    "manifests_bucket": {"value": "acme-rtbf-manifests"},
    "analytics_bucket": {"value": "acme-rtbf-analytics"},
    "receipts_bucket": {"value": "acme-rtbf-receipts"},
}


@pytest.fixture
def tf_outputs(tmp_path):
    path = tmp_path / "tf.json"
    path.write_text(json.dumps(TF))
    return str(path)


def values(spec) -> dict:
    return {dest: setting.value for dest, setting in spec.settings.items()}


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_option_is_a_real_pipeline_option(name):
    known = set(PipelineOptions([]).get_all_options().keys())
    profile = load_profile(name)
    assert set(profile.options) <= known, set(profile.options) - known


def test_no_profile_leaves_the_arguments_alone():
    spec = job_spec(["run", "--sessions=file:///d/*.jsonl", "--runner=FlinkRunner"], env={})
    assert spec.profile is None and spec.config is None
    assert spec.argv() == ["--runner=FlinkRunner", "--sessions=file:///d/*.jsonl"]
    assert {spec.source("runner"), spec.source("sessions"), spec.source("window_s")} == {"command line", "default"}


def test_flink_profile_with_terraform_outputs(tf_outputs):
    spec = job_spec(["run", "--runner", "flink", "--tf_outputs", tf_outputs, "--parallelism=8", "--dry-run"],
                    env={"FLINK_MASTER": "flink-jm-rest.rtbf:8081"})  # fmt: skip
    assert spec.dry_run and spec.unresolved == []
    options = values(spec)
    assert options["runner"] == "FlinkRunner"
    assert options["flink_master"] == "flink-jm-rest.rtbf:8081"
    assert options["parallelism"] == 8 and spec.source("parallelism") == "command line"  # the command line wins
    assert spec.source("flink_master") == "runner profile flink"
    assert options["streaming"] is True and options["detach"] is True
    assert options["sessions"] == "kinesis://rtbf-sessions?region=eu-west-1"
    assert options["registry"] == "rediss://master.rtbf.abc.euw1.cache.amazonaws.com:6379/0"
    assert options["archive_dir"] == "s3://acme-rtbf-archive/rtbf/archive"
    assert options["receipts_dir"] == "s3://acme-rtbf-receipts/rtbf/receipts"
    assert (options["environment_type"], options["environment_config"]) == ("EXTERNAL", "localhost:50000")
    text = spec.render_dry_run()
    command = text.split("submission command:\n", 1)[1].splitlines()[0]
    assert shlex.split(command)[:4] == ["beam-rtbf", "run", "--runner=FlinkRunner", "--parallelism=8"]
    assert "--sessions=kinesis://rtbf-sessions?region=eu-west-1" in shlex.split(command)
    # What the dry run prints is what the pipeline parses.
    parsed = PipelineOptions(shlex.split(command)[2:]).get_all_options()
    assert parsed["flink_master"] == "flink-jm-rest.rtbf:8081" and parsed["streaming"] is True
    assert parsed["parallelism"] == 8 and parsed["flink_submit_uber_jar"] is True
    assert spec.pipeline_options().get_all_options() == parsed


def test_missing_terraform_values_are_named():
    with pytest.raises(
        UsageError, match=r"no value for --sessions: tf.sessions_stream_name; --sessions: tf.aws_region"
    ):
        job_spec(["run", "--runner=flink"], env={})
    shown = job_spec(["run", "--runner=flink", "--dry-run"], env={})
    assert "--archive_dir: tf.archive_bucket" in shown.unresolved
    assert "unresolved (give --tf_outputs FILE" in shown.render_dry_run()
    with pytest.raises(UsageError, match="no value for"):
        shown.pipeline_options()


def test_flags_given_on_the_command_line_need_no_terraform_value():
    spec = job_spec(["run", "--runner=flink", "--sessions=kafka://b:9092/s", "--requests=kafka://b:9092/r",
                     "--registry=redis://r:6379/0", "--output=s3://o/x", "--analytics_dir=s3://a/x",
                     "--archive_dir=s3://b/x", "--deadletter_dir=s3://b/d", "--manifests_dir=s3://c/x",
                     "--receipts_dir=s3://d/x", "--audit_dir=s3://d/a", "--s3_region_name=us-east-2"],
                    env={})  # fmt: skip
    assert spec.unresolved == []
    assert spec.value("sessions") == "kafka://b:9092/s" and spec.source("sessions") == "command line"


def test_spark_refuses_streaming_and_prints_the_spark_submit_step(tf_outputs):
    with pytest.raises(UsageError, match="portable Spark runner runs no streaming pipelines in Python.*kinesis://s"):
        job_spec(["run", "--runner=spark", f"--tf_outputs={tf_outputs}", "--sessions=kinesis://s",
                  "--requests=file:///r"])  # fmt: skip
    with pytest.raises(UsageError, match="no streaming"):
        job_spec(["run", "--runner=spark", f"--tf_outputs={tf_outputs}", "--sessions=file:///s",
                  "--requests=file:///r", "--streaming"])  # fmt: skip
    # Not only stream schemes: a generator with a rate never ends either.
    with pytest.raises(UsageError, match="stream sources given: --requests=synthetic://requests"):
        job_spec(["run", "--runner=spark", f"--tf_outputs={tf_outputs}", "--sessions=file:///s",
                  "--requests=synthetic://requests?users=10&request_rate=1"])  # fmt: skip
    with pytest.raises(UsageError, match="give bounded --sessions and --requests"):
        job_spec(["run", "--runner=SparkRunner"], env={})
    purge = job_spec(["purge", "--runner=spark", f"--tf_outputs={tf_outputs}", "--dry-run"], env={})
    options = values(purge)
    assert options["runner"] == "SparkRunner" and options["output_executable_path"] == "/mnt/rtbf/job.jar"
    then = (
        "spark-submit --class org.apache.beam.runners.spark.SparkPipelineRunner --master yarn "
        "--deploy-mode cluster /mnt/rtbf/job.jar"
    )
    assert purge.then() == then
    assert purge.render_dry_run().split("\nthen:\n  ", 1)[1].splitlines()[0] == then
    # The profile serves run and purge: its run-only option is left out of a purge, and said so.
    assert "filter_strategy" not in options and purge.ignored == ["--filter_strategy (runner profile spark)"]


def test_portable_profile_defaults_to_the_embedded_job_service():
    assert values(job_spec(["run", "--runner=portable"], env={})) == {
        "runner": "PortableRunner",
        "job_endpoint": "embed",
        "environment_type": "LOOPBACK",
    }
    remote = job_spec(["run", "--runner=portable"], env={"RTBF_JOB_ENDPOINT": "jobserver:8099"})
    assert (
        remote.value("job_endpoint") == "jobserver:8099" and remote.source("job_endpoint") == "runner profile portable"
    )


def test_direct_profile_runs_locally():
    spec = job_spec(["run", "--runner=direct", "--output=x"], env={})
    assert spec.argv() == ["--output=x"] and spec.profile.name == "direct" and spec.value("runner") is None


def test_secrets_are_masked_in_the_dry_run():
    spec = job_spec(["run", "--runner=portable", "--s3_secret_access_key=hunter2", "--dry-run"], env={})
    text = spec.render_dry_run()
    assert "hunter2" not in text and "\n  --s3_secret_access_key=***\n" in text
    assert "--s3_secret_access_key=hunter2" in spec.argv()  # the pipeline itself gets the real value


def test_a_profile_file_of_ones_own(tmp_path):
    path = tmp_path / "staging.yaml"
    path.write_text("runner: PortableRunner\ndescription: staging job server\noptions:\n  job_endpoint: js:8099\n")
    spec = job_spec(["run", "--profile", str(path)], env={})
    assert values(spec) == {"runner": "PortableRunner", "job_endpoint": "js:8099"}
    assert spec.source("job_endpoint") == "runner profile staging"
    with pytest.raises(UsageError, match="either --runner PROFILE or --profile FILE"):
        job_spec(["run", "--profile", str(path), "--runner=flink"])
    (tmp_path / "bad.yaml").write_text("- just a list\n")
    with pytest.raises(UsageError, match="expected a mapping with runner, description, options, then"):
        load_profile(str(tmp_path / "bad.yaml"))
    (tmp_path / "chain.yaml").write_text("runner: flink\n")
    with pytest.raises(UsageError, match="names a profile"):
        load_profile(str(tmp_path / "chain.yaml"))


def test_cli_dry_run_prints_and_exits_0_and_refusals_exit_2(tf_outputs, capsys):
    assert main(["run", "--runner", "flink", "--tf-outputs", tf_outputs, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("beam-rtbf run: dry run, runner profile flink\n")
    assert "\n  --archive_dir=s3://acme-rtbf-archive/rtbf/archive\n" in out
    assert main(["purge", "--runner", "spark", f"--tf_outputs={tf_outputs}", "--dry-run"]) == 0
    assert "SparkPipelineRunner" in capsys.readouterr().out
    assert main(["run", "--runner", "spark", f"--tf_outputs={tf_outputs}", "--sessions=kinesis://s"]) == 2
    err = capsys.readouterr().err
    assert "no streaming" in err and err.count("\n") == 1


def test_passwords_in_uris_and_source_options_are_masked_in_everything_a_dry_run_prints(capsys, caplog):
    argv = [
        "run",
        "--runner=portable",
        "--registry=redis://:pw-redis-1@cache:6379/0",
        "--sessions=kafka://b1:9093/sessions?group=rtbf&kafka.sasl.username=rtbf&kafka.sasl.password=pw-kafka-2",
        "--requests=kafka://rtbf:pw-url-3@b1:9093/requests",
        "--audit_dir=postgresql://rtbf:pw-pg-4@db:5432/rtbf",
        "--dry-run",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr()
    for secret in ("pw-redis-1", "pw-kafka-2", "pw-url-3", "pw-pg-4"):
        assert secret not in printed.out + printed.err + caplog.text
    lines = printed.out.splitlines()
    assert "  --registry=redis://:***@cache:6379/0" in lines
    assert "  --sessions=kafka://b1:9093/sessions?group=rtbf&kafka.sasl.username=rtbf&kafka.sasl.password=***" in lines
    assert "  --requests=kafka://rtbf:***@b1:9093/requests" in lines
    assert "  --audit_dir=postgresql://rtbf:***@db:5432/rtbf" in lines


def test_summary_json_keeps_the_uris_with_their_passwords_masked():
    from beam_rtbf.options import RtbfOptions
    from beam_rtbf.pipeline import summarize

    opts = RtbfOptions(
        [
            "--registry=redis://:pw-1@cache:6379/0",
            "--sessions=kafka://b1:9093/s?kafka.sasl.password=pw-2",
            "--requests=kafka://rtbf:pw-3@b1:9093/r",
        ]
    )
    summary = summarize({}, 1.0, "FnApiRunner", "state", "why", True, opts)
    assert (summary["registry"], summary["sessions"], summary["requests"]) == (
        "redis://:***@cache:6379/0",
        "kafka://b1:9093/s?kafka.sasl.password=***",
        "kafka://rtbf:***@b1:9093/r",
    )
