"""The README's main command, as a new user runs it: a fresh virtualenv, a clean copy of the repo."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _readme_run_command() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^    (pip install \. && beam-rtbf run)$", readme, re.MULTILINE)
    assert match, "README no longer shows the main command as 'pip install . && beam-rtbf run'"
    return match.group(1)


@dataclasses.dataclass
class FreshInstall:
    checkout: Path
    venv: Path
    env: dict[str, str]
    result: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory) -> FreshInstall:
    """A clean copy of the repo and a new virtualenv, after the README's main command ran in them."""
    tmp_path = tmp_path_factory.mktemp("fresh")
    command = _readme_run_command()
    checkout = tmp_path / "beam-rtbf"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in tracked.splitlines():
        if (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, checkout / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    result = subprocess.run(
        ["bash", "-c", command], cwd=checkout, env=env, capture_output=True, text=True, timeout=1500
    )
    return FreshInstall(checkout, venv, env, result)


def test_readme_main_command_in_a_fresh_virtualenv(fresh_install):
    checkout, result = fresh_install.checkout, fresh_install.result
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "beam-rtbf run summary" in result.stdout
    summary = json.loads((checkout / "rtbf-out" / "summary.json").read_text())
    assert summary["conservation_ok"] is True
    assert summary["sessions_in"] == summary["clean"] + summary["suppressed"] + summary["dead_lettered"]
    assert summary["sessions_in"] > 1_000_000 and summary["dead_lettered"] > 0
    assert summary["requests_accepted"] == 1_000 == summary["manifests_written"]
    assert summary["runner"] == "FnApiRunner" and summary["filter_strategy"] == "broadcast"
    assert len(list((checkout / "rtbf-out" / "manifests").glob("*.json"))) == 1_000
    assert (checkout / "rtbf-out" / "_state" / "registry.sqlite").exists()  # under the output, not the cwd


# What each URI scheme and registry in the README imports when it is used: a plain
# `pip install .` must bring all of them (no ModuleNotFoundError on a kafka:// URI).
CONNECTOR_CHECK = """
import confluent_kafka, boto3, redis
from google.cloud import pubsub_v1, storage
from apache_beam.io.filesystems import FileSystems
from beam_rtbf.sources import source_for
print(type(FileSystems.get_filesystem("gs://b/x")).__name__, type(FileSystems.get_filesystem("s3://b/x")).__name__)
for uri in ("kafka://127.0.0.1:9/t?group=g", "kinesis://s?region=eu-west-1", "pubsub://projects/p/subscriptions/s"):
    source_for(uri, "sessions").poller()
print("connectors ok")
"""


def test_plain_install_brings_every_connector_and_old_extras_still_install(fresh_install):
    assert fresh_install.result.returncode == 0, fresh_install.result.stderr[-3000:]
    python = str(fresh_install.venv / "bin" / "python")
    check = subprocess.run(
        [python, "-c", CONNECTOR_CHECK], cwd=fresh_install.checkout.parent, env=fresh_install.env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr[-3000:]
    assert check.stdout.splitlines()[-2:] == ["GCSFileSystem S3FileSystem", "connectors ok"]

    # The former connector extras are kept as names that add nothing: old commands still work.
    extras = subprocess.run(
        [python, "-m", "pip", "install", ".[kafka,aws,gcp,redis]"], cwd=fresh_install.checkout,
        env=fresh_install.env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert extras.returncode == 0, extras.stderr[-3000:]
    assert "does not provide the extra" not in extras.stderr
    consistent = subprocess.run(
        [python, "-m", "pip", "check"], env=fresh_install.env, capture_output=True, text=True, timeout=120
    )
    assert consistent.returncode == 0, consistent.stdout
