"""The job spec: flags, --config and the runner profile in one typed object, one precedence rule."""

from __future__ import annotations

import json

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_rtbf.cli import job_spec, main
from beam_rtbf.flags import UsageError
from beam_rtbf.jobspec import load_job_file


def write(tmp_path, text: str, name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_command_line_beats_config_beats_profile_beats_default(tmp_path):
    config = write(
        tmp_path,
        "runner: portable\noptions:\n  window_s: 7200\n  filter-strategy: broadcast\n  job_endpoint: js:8099\n",
    )
    spec = job_spec(["run", "--config", config, "--window-s", "3600"], env={})
    assert [(d, spec.value(d), spec.source(d)) for d in ("window_s", "filter_strategy", "job_endpoint",
            "environment_type", "runner", "state_shards")] == [
        ("window_s", 3600, "command line"),
        ("filter_strategy", "broadcast", f"config {config}"),
        ("job_endpoint", "js:8099", f"config {config}"),  # the config file beat the profile's embed
        ("environment_type", "LOOPBACK", "runner profile portable"),  # the config named the profile
        ("runner", "PortableRunner", "runner profile portable"),
        ("state_shards", 4, "default"),
    ]  # fmt: skip
    assert spec.argv() == [
        "--runner=PortableRunner",
        "--window_s=3600",
        "--filter_strategy=broadcast",
        "--job_endpoint=js:8099",
        "--environment_type=LOOPBACK",
    ]
    text = spec.render_dry_run()
    assert text.splitlines()[2:10] == [
        "final options (each under where it came from; every other option is at its default):",
        "  # command line",
        "  --window_s=3600",
        f"  # config {config}",
        "  --filter_strategy=broadcast",
        "  --job_endpoint=js:8099",
        f"  # runner profile portable ({spec.profile.path})",
        "  --runner=PortableRunner",
    ]
    # A runner on the command line beats the config's: no profile then.
    spec = job_spec(["run", "--config", config, "--runner", "FlinkRunner"], env={})
    assert spec.profile is None and spec.value("runner") == "FlinkRunner" and spec.value("environment_type") is None
    flink = write(tmp_path, "runner: FlinkRunner\noptions:\n  registry:\n", "flink.yaml")
    spec = job_spec(["run", "--config", flink, "--runner", "direct", "--dry-run"], env={})
    assert spec.profile.name == "direct" and spec.value("runner") is None and spec.source("runner") == "default"
    assert spec.source("registry") == f"config {flink}" and "  (--registry at its default)" in spec.render_dry_run()
    assert job_spec(["run", "--config", flink], env={}).settings["runner"].value == "FlinkRunner"


def test_the_spec_is_what_the_pipeline_parses(tmp_path):
    config = write(
        tmp_path,
        "options:\n  max_staleness_s: 12.5\n  detach: true\n  streaming: false\n"
        "  experiments: [a, b=1]\n  no_save_main_session: true\n",
    )
    spec = job_spec(["run", "--config", config], env={})
    assert {d: s.value for d, s in spec.settings.items()} == {
        "max_staleness_s": 12.5,
        "detach": True,
        "streaming": False,
        "experiments": ["a", "b=1"],
        "save_main_session": False,
    }
    assert spec.argv() == [
        "--max_staleness_s=12.5",
        "--detach",
        "--experiment=a",  # the option's first spelling
        "--experiment=b=1",
        "--no_save_main_session",
    ]
    parsed = spec.pipeline_options().get_all_options()
    assert (parsed["max_staleness_s"], parsed["detach"], parsed["streaming"]) == (12.5, True, False)
    assert (parsed["experiments"], parsed["save_main_session"]) == (["a", "b=1"], False)
    assert "  (--streaming off)" in spec.render_dry_run().splitlines()


def test_placeholders_fill_config_files_too(tmp_path):
    tf = tmp_path / "tf.json"
    tf.write_text(json.dumps({"bucket": {"value": "acme"}}))
    config = write(tmp_path, "options:\n  output: s3://${tf.bucket}/${env.RTBF_ENV:-dev}\n  state_dir: /tmp/s\n")
    spec = job_spec(["run", "--config", config, f"--tf_outputs={tf}", "--registry=redis://r:6379/0"], env={})
    assert spec.value("output") == "s3://acme/dev"
    spec = job_spec(["run", "--config", config, f"--tf_outputs={tf}"], env={"RTBF_ENV": "prod"})
    assert spec.value("output") == "s3://acme/prod"
    with pytest.raises(UsageError, match=r"no value for --output: tf.bucket"):
        job_spec(["run", "--config", config], env={})
    with pytest.raises(UsageError, match="--tf_outputs fills"):
        job_spec(["run", f"--tf_outputs={tf}"], env={})


@pytest.mark.parametrize(
    "body, message",
    [
        ("options:\n  sesions: file:///x\n", "unknown option 'sesions' for beam-rtbf run (did you mean 'sessions'?)"),
        ("window_s: 30\n", "unknown key 'window_s' (options go under 'options:', e.g. options: {window_s: ...}"),
        ("option:\n  window_s: 30\n", "unknown key 'option' (did you mean 'options'?"),
        ("options:\n  window_s: abc\n", "options.window_s: argument --window_s: invalid int value: 'abc'"),
        (
            "options:\n  filter_strategy: brodcast\n",
            "options.filter_strategy: argument --filter_strategy: invalid choice",
        ),
        ("options:\n  dedupe: on\n", "options.dedupe: YAML read True as true/false"),
        ("options:\n  flink_version: 1.20\n", "options.flink_version: 1.2 is a number and the option takes text"),
        ("options:\n  detach: 'yes'\n", "options.detach: expected true or false, not 'yes'"),
        ("options:\n  window_s: [1, 2]\n", "options.window_s: takes one value, not a list"),
        ("options:\n  runner: flink\n", "give the runner at the top level (runner: flink)"),
        ("options: [a]\n", "'options' must be a mapping"),
        ("options:\n  window_s: 1\n  window-s: 2\n", "option 'window-s' given twice"),
        ("options: {a: [1\n", "not valid YAML: line 2: "),
    ],
)
def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path, capsys, body, message):
    config = write(tmp_path, body)
    assert main(["run", "--config", config, "--output", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1 and captured.err.startswith("beam-rtbf run: ")
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "out").exists()


def test_options_of_the_other_command_are_ignored_in_files_but_refused_on_the_command_line(tmp_path, capsys):
    config = write(tmp_path, "options:\n  sessions: file:///x/*.jsonl\n  output: /tmp/o\n  confirm: true\n")
    purge = job_spec(["purge", "--config", config], env={})
    assert purge.value("output") == "/tmp/o" and purge.ignored == [f"--sessions (config {config})"]
    run = job_spec(["run", "--config", config], env={})
    assert run.value("sessions") == "file:///x/*.jsonl" and run.ignored == [f"--confirm (config {config})"]
    assert main(["purge", "--sessions", "file:///x"]) == 2
    assert capsys.readouterr().err == "beam-rtbf purge: unknown option --sessions (see beam-rtbf purge --help)\n"


def test_then_of_a_config_file_wins_over_the_profiles(tmp_path):
    config = write(
        tmp_path, "runner: spark\noptions:\n  output_executable_path: /j.jar\nthen: run {output_executable_path}\n"
    )
    spec = job_spec(["purge", "--config", config, "--dry-run"], env={})  # the profile's ${tf...} stay unfilled
    assert spec.then() == "run /j.jar" and spec.source("output_executable_path") == f"config {config}"


def test_dry_run_round_trips_space_and_equals_forms(capsys):
    spaced = ["run", "--sessions", "file:///d/*.jsonl", "--window-s", "30", "--runner", "portable", "--dry-run"]
    joined = ["run", "--sessions=file:///d/*.jsonl", "--window_s=30", "--runner=portable", "--dry-run"]
    assert main(spaced) == 0
    first = capsys.readouterr().out
    assert main(joined) == 0
    assert capsys.readouterr().out == first
    assert "\n  --sessions=file:///d/*.jsonl\n  --window_s=30\n" in first
    command = first.split("submission command:\n  ", 1)[1].splitlines()[0]
    assert command == (
        "beam-rtbf run --runner=PortableRunner '--sessions=file:///d/*.jsonl' --window_s=30 "
        "--job_endpoint=embed --environment_type=LOOPBACK"
    )
    # The submission command, run again, gives the same options from the command line alone.
    again = job_spec(["run", "--runner=PortableRunner", "--sessions=file:///d/*.jsonl", "--window_s=30",
                      "--job_endpoint=embed", "--environment_type=LOOPBACK"], env={})  # fmt: skip
    assert (
        PipelineOptions(again.argv()).get_all_options() == job_spec(joined, env={}).pipeline_options().get_all_options()
    )


def test_load_job_file_keeps_values_as_written(tmp_path):
    path = write(tmp_path, "description: d\noptions:\n  parallelism: 4\nthen: x\n")
    job = load_job_file(path)
    assert (job.kind, job.runner, job.description, job.options, job.then) == (
        "config",
        None,
        "d",
        {"parallelism": 4},
        "x",
    )
    assert job.source == f"config {path}"
    with pytest.raises(UsageError, match="No such file or directory"):
        load_job_file(str(tmp_path / "missing.yaml"))


def test_a_file_error_on_a_path_the_user_gave_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert (
        main(["generate", "--out", str(blocker / "data"), "--sessions", "10", "--users", "5", "--requests", "1"]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("beam-rtbf generate: ") and err.count("\n") == 1 and "Traceback" not in err, err
