"""The purge lock on a local file system: one holder, refusals that name it, released by any death."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from beam_rtbf.job import OutputInUse
from beam_rtbf.purge.lock import PurgeLock, lock_path, purge_lock

_HOLD = """
import sys, time
from beam_rtbf.purge.lock import PurgeLock
PurgeLock(sys.argv[1], "run-holder").acquire()
print("held", flush=True)
time.sleep(120)
"""


def _holder(receipts: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", _HOLD, receipts], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_lock_is_refused_naming_the_holder_until_the_holder_lets_go(tmp_path):
    receipts = str(tmp_path / "receipts")
    first = PurgeLock(receipts, "run-a")
    first.acquire()
    holder = json.loads(open(lock_path(receipts), encoding="utf-8").read())
    assert (holder["run"], holder["pid"]) == ("run-a", os.getpid())
    with pytest.raises(
        OutputInUse, match=rf"purge run-a \(host \S+, pid {os.getpid()}, since \d{{4}}-.*one purge at a time"
    ):
        PurgeLock(receipts, "run-b").acquire()  # another open file in this process: flock refuses it too
    first.release()
    with purge_lock(receipts, "run-b"):
        assert json.loads(open(lock_path(receipts), encoding="utf-8").read())["run"] == "run-b"
        with pytest.raises(OutputInUse, match="purge run-b"):
            PurgeLock(receipts, "run-c").acquire()
    PurgeLock(receipts, "run-c").acquire()


def test_a_lock_held_by_another_process_is_refused_and_freed_when_that_process_is_killed(tmp_path):
    receipts = str(tmp_path / "receipts")
    child = _holder(receipts)
    try:
        with pytest.raises(OutputInUse, match=rf"purge run-holder \(host \S+, pid {child.pid},"):
            PurgeLock(receipts, "run-b").acquire()
        os.kill(child.pid, signal.SIGKILL)  # no cleanup at all: the kernel drops the flock
        child.wait(timeout=10)
        lock = PurgeLock(receipts, "run-b")
        deadline = time.monotonic() + 5
        while True:
            try:
                lock.acquire()
                break
            except OutputInUse:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert json.loads(open(lock_path(receipts), encoding="utf-8").read())["run"] == "run-b"
        lock.release()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_the_lock_is_let_go_of_when_the_work_inside_it_fails(tmp_path):
    receipts = str(tmp_path / "receipts")
    with pytest.raises(RuntimeError, match="boom"), purge_lock(receipts, "run-a"):
        raise RuntimeError("boom")
    with purge_lock(receipts, "run-b"):
        pass


@pytest.mark.parametrize(
    ("archive", "lock"),
    [
        ("/data/rtbf-out/archive", "/data/rtbf-out/archive.purge.lock"),
        ("/data/rtbf-out/archive/", "/data/rtbf-out/archive.purge.lock"),
        ("s3://bucket/run/archive", "s3://bucket/run/archive.purge.lock"),
        ("s3://bucket", "s3://bucket/.purge.lock"),
        ("s3://bucket/", "s3://bucket/.purge.lock"),
    ],
)
def test_the_lock_sits_beside_the_archive_root(archive, lock):
    assert lock_path(archive) == lock


def test_a_link_a_folder_or_a_pipe_where_the_lock_goes_is_refused_and_left_alone(tmp_path):
    archive = str(tmp_path / "archive")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.symlink(victim, lock_path(archive))
    with pytest.raises(OutputInUse, match=r"archive\.purge\.lock cannot be the purge lock .*remove it"):
        PurgeLock(archive, "run-a").acquire()
    assert victim.read_text() == "keep me"
    os.unlink(lock_path(archive))
    os.mkdir(lock_path(archive))
    with pytest.raises(OutputInUse, match="cannot be the purge lock"):
        PurgeLock(archive, "run-a").acquire()
    os.rmdir(lock_path(archive))
    os.mkfifo(lock_path(archive))
    with pytest.raises(OutputInUse, match="is not a regular file and cannot be the purge lock"):
        PurgeLock(archive, "run-a").acquire()  # returns at once: a pipe is never waited on
    os.unlink(lock_path(archive))
    with open(lock_path(archive), "w", encoding="utf-8") as handle:
        handle.write("\x00 garbage left by something else")
    with purge_lock(archive, "run-a"):
        assert json.loads(open(lock_path(archive), encoding="utf-8").read())["run"] == "run-a"
