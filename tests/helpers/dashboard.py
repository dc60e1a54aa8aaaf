"""A known output folder for the dashboard tests, the dashboard as a process, and headless Chromium.

The folder (``build_run``): run 1 archives generated sessions (with bad lines: dead letters);
run 2 brings five requests, which ``purge`` then erases and verifies; run 3 reads more
sessions and one more (old) request that no purge has seen yet (overdue); two requests come
from ``forget`` afterwards (open, deadlines ahead). Request ids hold the subject ids on
purpose (``erase-u0000011-gdpr``): the dashboard must show neither.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from beam_rtbf.cli import main
from beam_rtbf.testing.redis_server import free_port, stop_process, wait_listening

ROOT = Path(__file__).resolve().parents[2]
USERS = 200
RUN1_SESSIONS = f"synthetic://sessions?users={USERS}&sessions=3000&seed=7&bad_rate=0.01"
RUN3_SESSIONS = f"synthetic://sessions?users={USERS}&sessions=2000&seed=8&bad_rate=0.01"
PURGED = {  # request id -> (subject id, aliases, regulation, requested_at)
    "erase-u0000011-gdpr": ("u0000011", ["u0000011@example.com"], "gdpr", "2026-01-02T00:00:00Z"),
    "erase-u0000022-gdpr": ("u0000022", [], "gdpr", "2026-01-02T01:00:00Z"),
    "erase-u0000033-gdpr": ("u0000033", ["dev-u0000033"], "gdpr", "2026-01-02T02:00:00Z"),
    "erase-u0000044-ccpa": ("u0000044", [], "ccpa", "2026-01-02T03:00:00Z"),
    "erase-u0000055-gdpr": ("u0000055", [], "gdpr", "2026-01-02T04:00:00Z"),
}
LATE = {"late-u0000066-gdpr": ("u0000066", ["u0000066@example.com"], "gdpr", "2026-01-05T00:00:00Z")}
FORGOTTEN_LATER = [  # beam-rtbf forget: requested now
    ("u0000077", ["--request-id", "forget-u0000077@example.com"]),
    ("u0000088", ["--alias", "u0000088@example.com", "--regulation", "ccpa"]),
]
CHROMIUM = "/usr/bin/chromium"


@dataclasses.dataclass(frozen=True)
class DashboardRun:
    out: Path
    identifiers: list[str]  # every subject id, alias and request id of every request
    user_ids: list[str]  # every user id in the inputs (archive and dead letters)


def _requests_file(path: Path, requests: dict) -> Path:
    path.write_text(
        "".join(
            json.dumps({"request_id": rid, "subject_id": s, "aliases": a, "regulation": reg, "requested_at": at}) + "\n"
            for rid, (s, a, reg, at) in requests.items()
        )
    )
    return path


def build_run(root: Path) -> DashboardRun:
    """The folder described above; every command through ``beam-rtbf``'s own ``main``."""
    out, data = root / "out", root / "data"
    data.mkdir(parents=True)
    (data / "empty.jsonl").write_bytes(b"")
    common = [f"--output={out}", "--archive_partition_s=3600"]
    assert main(["run", *common, f"--sessions={RUN1_SESSIONS}"]) == 0
    requests = _requests_file(data / "requests-1.jsonl", PURGED)
    assert main(["run", *common, f"--sessions=file://{data / 'empty.jsonl'}", f"--requests=file://{requests}"]) == 0
    assert main(["purge", f"--output={out}"]) == 0
    late = _requests_file(data / "requests-2.jsonl", LATE)
    assert main(["run", *common, f"--sessions={RUN3_SESSIONS}", f"--requests=file://{late}"]) == 0
    for subject, extra in FORGOTTEN_LATER:
        assert main(["forget", subject, *extra, f"--output={out}"]) == 0
    from beam_rtbf.registry.embedded import EmbeddedRegistry

    registry = EmbeddedRegistry(str(out / "_state" / "registry.sqlite"))
    try:
        identifiers = sorted({i for a in registry.requests() for i in (a.request.request_id, *a.request.subject_ids)})
    finally:
        registry.close()
    return DashboardRun(out, identifiers, _user_ids(out))


def _user_ids(out: Path) -> list[str]:
    """The generated users, every user id left in the archive, and those quoted in dead letters."""
    ids = {f"u{i:07d}" for i in range(USERS)}
    for path in (out / "archive").glob("dt=*/**/*.parquet"):
        ids.update(pq.read_table(path, columns=["user_id"]).column("user_id").to_pylist())
    for path in (out / "deadletter").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            ids.update(re.findall(r'"user_id": "([^"\\]+)"', json.loads(line).get("raw") or ""))
    return sorted(ids)


def identifier_pattern(identifiers: list[str]) -> re.Pattern:
    """Any of ``identifiers`` not inside a longer word (``u1`` is not found in ``u10``, but is in ``u1@x.org``)."""
    edge = "A-Za-z0-9_"
    alternatives = "|".join(map(re.escape, sorted(identifiers, key=len, reverse=True)))
    return re.compile(rf"(?<![{edge}])(?:{alternatives})(?![{edge}])")


class DashboardProcess:
    """``beam-rtbf dashboard`` as a subprocess on a free loopback port, stopped by its PID."""

    def __init__(self, out: Path, host: str = "127.0.0.1", env: dict | None = None, extra: tuple = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = out.parent / f"dashboard-{self.port}.log"
        command = [
            sys.executable,
            "-m",
            "beam_rtbf.cli",
            "dashboard",
            f"--output={out}",
            f"--host={host}",
            f"--port={self.port}",
            *extra,
        ]
        environment = {**os.environ, **(env or {})}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
        if not wait_listening(self.process, self.port, time.monotonic() + 90):
            self.stop()
            raise RuntimeError(f"the dashboard did not listen on {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            stop_process(self.process)


def chromium() -> str:
    """Debian's chromium; a missing browser fails loudly (scripts/test.sh installs it)."""
    path = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if path is None:
        raise RuntimeError("chromium is not installed: apt-get install -y chromium (scripts/test.sh does)")
    return path


def launch_browser(playwright):
    """Headless Chromium from Debian (no browser download); --no-sandbox as root only."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=chromium(), headless=True, args=args)


def screenshot(url: str, path: str, width: int = 1400, height: int = 1000) -> None:
    """A screenshot of the overview at ``url`` once its figures are there (the README's docs/dashboard.png):

    python -m tests.helpers.dashboard http://127.0.0.1:8050/ docs/dashboard.png
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(url)
        for element in ("#run-sessions_in", "#analytics-sessions", "#requests-table", "#deadletters-table"):
            page.wait_for_selector(element, timeout=120_000)
        page.wait_for_timeout(1000)  # the charts' transitions
        page.screenshot(path=path, full_page=True)
        browser.close()


if __name__ == "__main__":
    screenshot(sys.argv[1], sys.argv[2])
