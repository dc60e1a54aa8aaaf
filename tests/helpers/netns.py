"""Run a command in a network namespace of its own, with only a loopback interface.

Beam's job service and SDK worker pool bind every interface ("[::]"); run inside a fresh
namespace they can be reached from nowhere but the processes started in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess


def netns_prefix() -> list[str]:
    """``unshare`` (root: a network namespace; else also a user namespace) bringing ``lo`` up."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise RuntimeError("unshare (util-linux) is not installed")
    flags = ["--net"] if os.geteuid() == 0 else ["--net", "--map-root-user"]
    return [unshare, *flags, "sh", "-c", 'ip link set lo up && exec "$@"', "netns"]


def run_in_netns(argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*netns_prefix(), *argv], capture_output=True, text=True, timeout=timeout, **kwargs)
