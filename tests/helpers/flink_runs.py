"""A ``beam-rtbf run --runner=flink-local --streaming`` in a network namespace of its own (the job
server and Flink bind every interface), started, watched through its output folder and stopped
by a signal from the test. Every wait has a bounded deadline: Flink is slow on a shared machine.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers.data import archive_rows
from tests.helpers.engine_runs import ROOT
from tests.helpers.netns import netns_prefix

__all__ = ["FlinkRun", "wait_for", "archived_ids", "checkpoint_flags", "newest_checkpoint"]


def checkpoint_flags(work: Path, interval_ms: int = 2000) -> list[str]:
    """Checkpoints every ``interval_ms`` into ``work/checkpoints``, the last kept on cancel."""
    return [
        f"--checkpointing_interval={interval_ms}", "--state_backend=filesystem",
        f"--state_backend_storage_path=file://{work / 'checkpoints'}",
        "--retain_externalized_checkpoints_on_cancellation",
    ]  # fmt: skip


class FlinkRun:
    """One streaming run into ``work/out`` with the embedded registry ``work/r.sqlite``; ``flags`` added."""

    def __init__(self, work: Path, *flags: str, netns: bool = True) -> None:
        self.work = work
        self.out = work / "out"
        self.flags = flags
        self.argv = [
            sys.executable, "-m", "beam_rtbf.cli", "run", "--runner=flink-local", "--streaming",
            f"--output={self.out}", f"--registry=embedded://{work / 'r.sqlite'}", *flags,
        ]  # fmt: skip
        self.netns = netns
        self.log = work / f"run-{len(list(work.glob('run-*.log')))}.log"
        self.job: subprocess.Popen | None = None

    def start(self) -> FlinkRun:
        self.work.mkdir(parents=True, exist_ok=True)
        prefix = netns_prefix() if self.netns else []
        with open(self.log, "w") as log:  # the child keeps its own descriptor
            # A session of its own: the run and the job server it starts are one process group.
            self.job = subprocess.Popen(
                [*prefix, *self.argv], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def running(self) -> bool:
        return self.job is not None and self.job.poll() is None

    def stop(self, signum: int = signal.SIGINT, timeout_s: float = 240) -> dict[str, Any]:
        """Signal the run, wait for it to exit 0, return its summary."""
        assert self.job is not None
        self.job.send_signal(signum)
        self.job.wait(timeout=timeout_s)
        assert self.job.returncode == 0, f"exit {self.job.returncode}: {self.tail()}"
        return self.summary()

    def wait(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the run to end by itself (exit 0); its summary."""
        assert self.job is not None
        self.job.wait(timeout=timeout_s)
        assert self.job.returncode == 0, f"exit {self.job.returncode}: {self.tail()}"
        return self.summary()

    def summary(self) -> dict[str, Any]:
        return json.loads((self.out / "summary.json").read_text())

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        """SIGKILL the process group of the PID this helper started (the run and its job server)."""
        if self.running():
            os.killpg(self.job.pid, signal.SIGKILL)
            self.job.wait(timeout=30)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, run: FlinkRun | None = None) -> float:
    """Poll ``condition`` until true (returns the seconds it took); fail after ``timeout_s`` or if ``run`` ended."""
    started = time.monotonic()
    while not condition():
        if run is not None and not run.running():
            raise AssertionError(f"the run ended before {what}: {run.tail()}")
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"no {what} within {timeout_s:g} s" + (f": {run.tail(1500)}" if run else ""))
        time.sleep(0.5)
    return time.monotonic() - started


def archived_ids(out: Path) -> Counter:
    """event_id -> how many times it is in the archive (empty while nothing is written)."""
    try:
        return Counter(archive_rows(str(out)).column("event_id").to_pylist())
    except (OSError, ValueError):  # a file renamed into place while listed: read again next time
        return Counter()


def newest_checkpoint(work: Path) -> int:
    """The number N of the newest retained checkpoint (``chk-N`` with its ``_metadata``), 0 if none.

    Flink keeps one: wait for a later one by its number, not by counting folders."""
    found = glob.glob(str(work / "checkpoints" / "*" / "chk-*" / "_metadata"))
    return max((int(os.path.basename(os.path.dirname(p)).removeprefix("chk-")) for p in found), default=0)
