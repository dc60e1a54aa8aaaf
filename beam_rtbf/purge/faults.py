"""Named fault points in the purge, where a test can stop the process to prove a re-run recovers.

The purge is written so that a crash at any point followed by a re-run ends as one
clean run. The tests check that by killing a purge at the riskiest moments:

    ``before_replace``     a file's journal is written, the file not yet replaced
    ``after_replace``      the file is replaced, its old object versions not yet deleted
    ``analytics_written``  recomputed analytics windows written, the old rows not yet removed

Production code calls ``reached(point)`` on a ``FaultPoints`` object; the default
is ``NO_FAULTS``, which does nothing, and nothing here reads the environment. A
test installs its own object for the process with ``install`` (the purge's Beam
steps run in the launching process on the local runner, and look the installed
object up when they reach a point): see ``tests/helpers/crash_purge.py``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["FaultPoints", "NoFaults", "NO_FAULTS", "POINTS", "install", "installed", "reached"]

POINTS = ("before_replace", "after_replace", "analytics_written")


class FaultPoints(Protocol):
    """Called at each named point of the purge; may raise or end the process (tests only)."""

    def reached(self, point: str) -> None: ...


class NoFaults:
    """The production default: every point passes."""

    def reached(self, point: str) -> None:
        del point


NO_FAULTS = NoFaults()
_installed: FaultPoints = NO_FAULTS


def install(faults: FaultPoints) -> FaultPoints:
    """Make ``faults`` the process's fault points (tests only); returns the previous ones to restore."""
    global _installed
    previous, _installed = _installed, faults
    return previous


def installed() -> FaultPoints:
    """The process's fault points: ``NO_FAULTS`` unless a test called ``install``."""
    return _installed


def reached(point: str, faults: FaultPoints | None = None) -> None:
    """Signal ``point`` to ``faults`` (given explicitly), else to the installed fault points."""
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}; expected one of {POINTS}")
    (faults if faults is not None else _installed).reached(point)
