"""The beam-rtbf command: subcommands, YAML config, generate, forget, status, clear errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from beam_rtbf.cli import job_spec, main


def test_yaml_config_becomes_options_and_command_line_wins(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text(
        "options:\n  window_s: 30\n  filter-strategy: broadcast\n  streaming: false\n  request_tag_field: type\n"
    )
    spec = job_spec(["run", "--config", str(config), "--window_s=45"], env={})
    assert spec.argv() == ["--window_s=45", "--filter_strategy=broadcast", "--request_tag_field=type"]
    assert [spec.source(d) for d in ("window_s", "filter_strategy", "streaming")] == [
        "command line",
        f"config {config}",
        f"config {config}",
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        job_spec(["run", "--config", str(bad)])


@pytest.mark.slow
def test_run_with_config_file(tmp_path, registry_url, capsys):
    config = tmp_path / "job.yaml"
    config.write_text(
        f"options:\n  output: {tmp_path / 'out'}\n  registry: {registry_url}\n"
        "  sessions: synthetic://sessions?users=50&sessions=3000&seed=2\n"
        "  requests: synthetic://requests?users=50&requests=5&seed=2\n  window_s: 7200\n"
    )
    assert main(["run", "--config", str(config), "--window-s=3600"]) == 0
    printed = capsys.readouterr().out
    assert "beam-rtbf run summary" in printed and "conservation" in printed
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sessions_in"] == 3000 and summary["manifests_written"] == 5
    windows = {
        json.loads(line)["window_start"][11:16]
        for f in (tmp_path / "out" / "analytics").rglob("*.jsonl")
        for line in f.read_text().splitlines()
    }
    assert windows <= {f"{h:02d}:00" for h in range(24)}  # hourly windows: the flag beat the file


def test_generate_forget_status(tmp_path, registry_url, capsys):
    assert (
        main(
            [
                "generate",
                "--out",
                str(tmp_path / "data"),
                "--sessions",
                "500",
                "--users",
                "40",
                "--requests",
                "3",
                "--format",
                "tsv",
            ]
        )
        == 0
    )
    generated = json.loads(capsys.readouterr().out)
    assert generated["sessions"] == 500 and generated["requests"] == 3
    lines = (tmp_path / "data" / "sessions-0000.tsv").read_text().splitlines()
    assert lines[0].split("\t")[0] == "user_id" and len(lines) == 501

    assert (
        main(
            [
                "forget",
                "u0000001",
                "--alias",
                "a@example.com",
                "--request-id",
                "r-9",
                "--regulation",
                "ccpa",
                "--registry",
                registry_url,
            ]
        )
        == 0
    )
    forgotten = json.loads(capsys.readouterr().out)
    assert forgotten["subject_ids"] == ["u0000001", "a@example.com"] and forgotten["duplicate"] is False
    assert main(["forget", "u0000001", "--request-id", "r-9", "--registry", registry_url]) == 0
    assert json.loads(capsys.readouterr().out)["duplicate"] is True

    assert main(["status", "r-9", "--registry", registry_url]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["request"]["regulation"] == "ccpa" and [e["status"] for e in status["timeline"]] == ["received"]
    assert main(["status", "--registry", registry_url]) == 0
    listing = capsys.readouterr().out.strip().splitlines()
    assert len(listing) == 1 and listing[0].startswith("r-9\tccpa\treceived") and "days left" in listing[0]
    assert main(["status", "nope", "--registry", registry_url]) == 1


def test_unknown_source_scheme_is_one_clear_error(tmp_path, registry_url, capsys):
    code = main(["run", f"--output={tmp_path}", f"--registry={registry_url}", "--sessions=nosuch://b/t"])
    assert code == 2
    assert "no source for scheme 'nosuch'" in capsys.readouterr().err


def test_unreachable_stream_fails_before_the_pipeline_starts(tmp_path, registry_url, capsys):
    started = time.monotonic()
    code = main(
        [
            "run",
            f"--output={tmp_path}",
            f"--registry={registry_url}",
            "--sessions=kafka://127.0.0.1:1/t?group=g&metadata_timeout_s=1",
        ]
    )
    assert code == 2
    assert "kafka://127.0.0.1:1/t: cannot reach the brokers" in capsys.readouterr().err
    assert time.monotonic() - started < 10  # one check, not the runner's four retries
    assert not (tmp_path / "summary.json").exists()


def test_status_lists_open_requests_overdue_first_with_days_left(registry_url, capsys):
    from beam_rtbf.records import ErasureRequest, now_ms
    from beam_rtbf.registry import open_registry

    day = 86_400_000
    now = now_ms()
    with open_registry(registry_url) as registry:
        registry.add(
            [
                ErasureRequest("fresh-gdpr", "u1", now - 1 * day, "gdpr"),
                ErasureRequest("old-ccpa", "u2", now - 10 * day, "ccpa"),
                ErasureRequest("overdue-gdpr", "u3", now - 40 * day, "gdpr"),
                ErasureRequest("done", "u4", now - 35 * day, "gdpr"),
            ]
        )
        registry.record_event("done", "verified", now, "receipt")
    assert main(["status", "--registry", registry_url]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert [r[0] for r in rows] == ["overdue-gdpr", "fresh-gdpr", "old-ccpa"]
    assert rows[0][2] == "received" and rows[0][4].startswith("OVERDUE by ")
    # GDPR: one month (30 days), CCPA: 45 days, counted from requested_at.
    assert [r[4] for r in rows[1:]] == ["29.0 days left", "35.0 days left"]
    assert main(["status", "--all", "--registry", registry_url]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.strip().splitlines()] == [
        "overdue-gdpr",
        "done",
        "fresh-gdpr",
        "old-ccpa",
    ]


def test_only_beams_unused_cloud_client_warnings_are_silenced():
    from beam_rtbf.cli import UnusedCloudClients

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("apache_beam.io.filesystems", logging.WARNING, __file__, 1, msg, None, None)

    quiet = UnusedCloudClients()
    assert not quiet.filter(record("Failed to import GCSFileSystem; loading of this filesystem will be skipped."))
    assert not quiet.filter(record("apitools not found, and bigquery client libraries are not available"))
    assert quiet.filter(record("Failed to import S3FileSystem; loading of this filesystem will be skipped."))
    assert quiet.filter(record("registry unreachable: holding sessions"))


@pytest.mark.slow
def test_output_mode_group_lets_the_group_read_and_nobody_else(tmp_path, capsys):
    import os
    import stat

    out = tmp_path / "out"
    registry = tmp_path / "reg" / "registry.sqlite"
    argv = [
        "run",
        f"--output={out}",
        f"--registry=embedded://{registry}",
        "--sessions=synthetic://sessions?users=50&sessions=2000&seed=1&bad_rate=0.01",
        "--requests=synthetic://requests?users=50&requests=3&seed=1",
        "--output_mode=group",
    ]
    before = os.umask(0o022)
    os.umask(before)
    assert main(argv) == 0
    assert os.umask(before) == before  # the command restored the process umask
    paths = [out, *out.rglob("*"), registry.parent, *registry.parent.iterdir()]
    modes = {stat.S_IMODE(p.stat().st_mode) for p in paths if p.is_dir()}
    assert modes == {0o750}
    modes = {stat.S_IMODE(p.stat().st_mode) for p in paths if p.is_file()}
    assert modes == {0o640}
    assert (out / "deadletter").is_dir() and (out / "manifests").is_dir()


def test_forget_creates_an_owner_only_registry(tmp_path, capsys):
    import stat

    registry = tmp_path / "new" / "registry.sqlite"
    assert main(["forget", "u0000001", "--request-id", "r-1", "--registry", f"embedded://{registry}"]) == 0
    paths = [registry.parent, *registry.parent.iterdir()]
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in paths} == {
        "new": "0o700",
        **{p.name: "0o600" for p in paths if p.is_file()},
    }


# -- the command line refuses what it does not understand ------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--sesions", "file:///x"], "beam-rtbf run: unknown option --sesions (did you mean --sessions?)"),
        (["run", "--window-z=3"], "beam-rtbf run: unknown option --window-z (did you mean --window_s?)"),
        (["purge", "--ouput", "X"], "beam-rtbf purge: unknown option --ouput (did you mean --output?)"),
        (
            ["forget", "u1", "--regulaton", "ccpa"],
            "beam-rtbf forget: unknown option --regulaton (did you mean --regulation?)",
        ),
        (["status", "--al"], "beam-rtbf status: unknown option --al (did you mean --all?)"),
        (["generate", "--sesions", "10"], "beam-rtbf generate: unknown option --sesions (did you mean --sessions?)"),
        (
            ["run", "--filter_strategy", "brodcast"],
            "beam-rtbf run: argument --filter_strategy: invalid choice: 'brodcast'",
        ),
        (["run", "--window_s"], "beam-rtbf run: argument --window_s: expected one argument"),
        (["frobnicate"], "beam-rtbf: argument COMMAND: invalid choice: 'frobnicate'"),
        (
            ["--registry", "embedded:///tmp/r.sqlite", "generate", "--out", "x"],
            "beam-rtbf generate: --registry does not apply to generate",
        ),
    ],
)
def test_a_typo_exits_2_with_a_suggestion_before_anything_runs(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main([*argv, "--output" if argv[0] in ("run", "purge", "forget", "status") else "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(message) and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert list(tmp_path.iterdir()) == []  # not the output, not ./rtbf-out, not a registry


def test_the_global_flags_go_before_or_after_the_command(capsys):
    outputs = []
    for argv in (
        ["-v", "--registry", "redis://r:6379/0", "run", "--runner=portable", "--dry-run"],
        ["run", "-v", "--registry", "redis://r:6379/0", "--runner=portable", "--dry-run"],
        ["run", "--runner=portable", "--dry-run", "--registry=redis://r:6379/0", "--verbose"],
    ):
        assert main(argv) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] == outputs[2]
    assert "\n  # command line\n  --registry=redis://r:6379/0\n" in outputs[0]


def test_help_lists_every_option_with_its_default_grouped(capsys):
    assert main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    for line in (
        "job: config file, runner profile, dry run:",
        "  --config FILE ",
        "  --profile FILE ",
        "  --tf_outputs FILE ",
        "  --dry-run ",
        "  --runner RUNNER ",
        "sources:",
        "  --sessions SESSIONS ",
        "outputs:",
        "registry:",
        "filter:",
        "streaming:",
        "  --streaming ",
        "  --flink_master FLINK_MASTER",
        "  --job_endpoint JOB_ENDPOINT",
        "  --spark_master_url SPARK_MASTER_URL",
    ):
        assert line in text, line
    flat = " ".join(text.split())
    for option_default in (
        "--window_s WINDOW_S Analytics window length in seconds (default: 60)",
        "(default: ./rtbf-out)",
        "--filter_strategy {broadcast,lookup,bloom,state,auto}",
        "(default: auto)",
    ):
        assert option_default in flat, option_default
    assert "--dataflow_endpoint" not in text and "--confirm" not in text  # Beam's others hidden; purge's apart
    assert main(["purge", "--help"]) == 0
    text = capsys.readouterr().out
    for line in ("  --output OUTPUT ", "  --registry REGISTRY ", "  --confirm ", "  --runner RUNNER ", "  --dry-run "):
        assert line in text, line
    assert "--sessions" not in text and "(default: 0.5)" in " ".join(text.split())


def test_every_beam_option_is_accepted_as_beams_parser_would(capsys):
    spec = job_spec(["run", "--job_name=x", "--experiments=a,b", "--no_pipeline_type_check", "--dataflow_endpoint=e"])
    options = spec.pipeline_options().get_all_options()
    assert (options["job_name"], options["experiments"], options["pipeline_type_check"]) == ("x", ["a", "b"], False)
    assert options["dataflow_endpoint"] == "e"


def test_user_errors_are_one_line_never_a_traceback(tmp_path, capsys):
    cases = [
        (["run", "--config", str(tmp_path / "missing.yaml")], "beam-rtbf run: config "),
        (["purge", "--profile", str(tmp_path / "missing.yaml")], "beam-rtbf purge: runner profile "),
        (["run", "--runner=flink", "--tf_outputs", str(tmp_path / "tf.json")], "beam-rtbf run: --tf_outputs "),
        (["status", "--registry", "redis://127.0.0.1:1/0"], "beam-rtbf status: deletion registry unavailable: "),
        (["run", "--sessions=nosuch://b/t", "--dry-run"], "beam-rtbf run: no source for scheme 'nosuch'"),
        (["run", "--window_s=0", "--dry-run"], "beam-rtbf run: invalid options: --window_s must be >= 1"),
        (["purge", "--max_total_share=2", "--dry-run"], "beam-rtbf purge: --max_total_share must be in (0, 1]"),
        (["purge", "--one_step_max_files=-1", "--dry-run"], "beam-rtbf purge: --one_step_max_files must be >= 0"),
        (["purge", "--one_step_max_files=many", "--dry-run"], "beam-rtbf purge: "),
    ]
    for argv, start in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("\n") == 1 and "Traceback" not in err, err


def test_importing_the_cli_configures_no_logging():
    code = "import logging, beam_rtbf.cli; print(len(logging.getLogger().filters), len(logging.getLogger().handlers))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=120)
    assert done.stdout == "0 0\n", done.stderr


class _ClosedPipe:
    """stdout whose reader has gone (``beam-rtbf status | head -1`` after head exits)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stdout_ends_quietly_with_141(tmp_path, monkeypatch, capsys):
    registry = f"embedded://{tmp_path}/r.sqlite"
    assert main(["forget", "u1", "--registry", registry, "--request-id", "r1"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["status", "--all", "--registry", registry]) == 141
    assert capsys.readouterr().err == ""  # no "Broken pipe" message, no traceback
