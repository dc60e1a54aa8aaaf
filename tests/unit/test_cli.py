"""The beam-rtbf command: YAML config, generate, forget, status, clear errors."""

from __future__ import annotations

import json
import logging
import time

import pytest

from beam_rtbf.cli import config_to_argv, main


def test_yaml_config_becomes_flags_and_command_line_wins(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("window_s: 30\nfilter-strategy: broadcast\nstreaming: false\nrequest_tag_field: type\n")
    assert config_to_argv(str(config)) == ["--window_s=30", "--filter_strategy=broadcast", "--request_tag_field=type"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(SystemExit, match="expected a mapping"):
        config_to_argv(str(bad))


@pytest.mark.slow
def test_run_with_config_file(tmp_path, registry_url, capsys):
    config = tmp_path / "job.yaml"
    config.write_text(
        f"output: {tmp_path / 'out'}\nregistry: {registry_url}\n"
        "sessions: synthetic://sessions?users=50&sessions=3000&seed=2\n"
        "requests: synthetic://requests?users=50&requests=5&seed=2\nwindow_s: 7200\n"
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
    from beam_rtbf.cli import _UnusedCloudClients

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("apache_beam.io.filesystems", logging.WARNING, __file__, 1, msg, None, None)

    quiet = _UnusedCloudClients()
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
