"""The README's main command, as a new user runs it: a fresh virtualenv, a clean copy of the repo."""

from __future__ import annotations

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


def test_readme_main_command_in_a_fresh_virtualenv(tmp_path):
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
