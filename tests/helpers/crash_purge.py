"""Run ``beam-rtbf`` and kill the process (``os._exit``: no cleanup, like ``kill -9``) at a purge fault point.

    python -m tests.helpers.crash_purge POINT:N -- purge --output=... --registry=...

``POINT`` is one of ``beam_rtbf.purge.faults.POINTS``; the process ends with
``CRASH_EXIT_CODE`` the N-th time the purge reaches it (counted over the whole
process). The purge's Beam steps run in this process on the local runner, so the
fault points installed here are the ones they reach.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from beam_rtbf.purge import faults

__all__ = ["CRASH_EXIT_CODE", "CrashAt", "crash_purge_command", "main"]

CRASH_EXIT_CODE = 86
_REPO = Path(__file__).resolve().parents[2]


def crash_purge_command(spec: str, args: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run ``beam-rtbf ARGS`` under ``CrashAt.parse(spec)`` in a subprocess
    (the repository on ``PYTHONPATH`` so ``tests`` imports from any working directory)."""
    path = os.pathsep.join(p for p in (str(_REPO), env.get("PYTHONPATH", "")) if p)
    return [sys.executable, "-m", "tests.helpers.crash_purge", spec, "--", *args], {**env, "PYTHONPATH": path}


class CrashAt:
    """Fault points that end the process at the ``times``-th pass through ``point``."""

    def __init__(self, point: str, times: int) -> None:
        if point not in faults.POINTS:
            raise ValueError(f"unknown fault point {point!r}; expected one of {faults.POINTS}")
        self.point = point
        self.times = times
        self.passes = 0
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, spec: str) -> CrashAt:
        """``"before_replace:2"`` -> crash at the second pass through ``before_replace``."""
        point, _, times = spec.partition(":")
        return cls(point, int(times or 1))

    def reached(self, point: str) -> None:
        if point != self.point:
            return
        with self._lock:
            self.passes += 1
            if self.passes >= self.times:
                os._exit(CRASH_EXIT_CODE)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        raise SystemExit("usage: python -m tests.helpers.crash_purge POINT:N -- beam-rtbf arguments...")
    faults.install(CrashAt.parse(argv[0]))
    from beam_rtbf.cli import main as cli_main

    return cli_main(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
