"""One purge at a time per archive: two purges rewriting one file would undo each other's erasure.

Purge A reads a file, purge B reads it too, A writes it without A's subject and verifies,
then B writes its copy (without B's subject, with A's) over it: A's subject is back after
A's receipt said ``verified``. So a purge holds an exclusive lock from before it loads
the manifests until its receipts are written; a second purge of the same archive is
refused with one line (``OutputInUse``, exit code 2) and changes nothing.

The lock is ``ARCHIVE.purge.lock``, next to the archive root (``rtbf-out/archive.purge.lock``):
the archive is what two purges would fight over, whatever their ``--output`` or
``--receipts_dir``; outside the root, so the verification's listing of the archive is not
changed by it (an archive at a bucket's root gets ``s3://bucket/.purge.lock``, inside it:
scanned as any other file). Its body names the holder (run, host, pid, since) for the
refusal message.

- Local and mounted file systems: ``flock`` on the file, held by the purge's process. The
  kernel releases it when the process ends in any way (``kill -9`` included), so a crashed
  purge never leaves a lock behind. The file itself stays (removing it would let a waiting
  process lock an inode nobody else sees). A symbolic link, a folder or a pipe there is
  refused, never followed or written through.
- ``s3://``: the object is created with ``If-None-Match: *`` (S3 conditional writes), so
  exactly one of two racing purges gets it, and rewritten with ``If-Match`` on its ETag every
  ``heartbeat_s`` while held. A lock whose last write (the server's ``Last-Modified`` against
  the server's ``Date``: no client clock) is older than ``stale_after_s``, or whose holder was
  a process of this machine that is gone (same boot and pid namespace, a crashed purge re-run
  where it ran), belongs to a dead purge: it is taken over by a conditional write on its ETag,
  so two takers cannot both win. A holder whose heartbeat finds the lock taken over stops
  replacing files (``check_held``: the rewrite's last step before a replace, in this process)
  and fails. Released by deleting it, after checking it is still this holder's.
- Other schemes (``gs://``): no lock here (Beam's GCS client has no conditional create); a
  warning says to run one purge at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any

from beam_rtbf.job import OutputInUse
from beam_rtbf.sinks.versions import CONDITION_FAILED, s3_client, s3_error_code, split_s3_path

__all__ = ["PurgeLock", "LockLost", "purge_lock", "lock_path", "check_held"]

_LOGGER = logging.getLogger(__name__)

HEARTBEAT_S = 30.0  # s3: how often a held lock is rewritten
STALE_AFTER_S = 300.0  # s3: a lock not rewritten for this long belongs to a dead purge
_ATTEMPTS = 3  # s3: a lock that vanishes between the refused create and its read is tried again


class LockLost(OutputInUse):
    """An s3 lock this purge held was taken over (its heartbeats stopped for ``stale_after_s``):
    another purge works on the archive, so this one must not replace files or write receipts."""


_lost: list[str] = []  # why a lock held by this process was lost (at most one purge runs per process)


def check_held() -> None:
    """Raise ``LockLost`` if this process held a purge lock that another purge took over: a
    rewrite must not replace a file then (its copy may predate the other purge's rewrite)."""
    if _lost:
        raise LockLost(_lost[0])


def lock_path(archive_dir: str) -> str:
    """``ARCHIVE.purge.lock`` beside the archive root; inside it when the root is a bucket."""
    root = archive_dir.rstrip("/")
    _, sep, rest = root.partition("://")
    if sep and "/" not in rest:  # s3://bucket: no sibling
        return f"{root}/.purge.lock"
    return f"{root}.purge.lock"


def _machine() -> str:
    """This boot of this machine and this pid namespace: a pid means the same process only here."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot = handle.read().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def _holder(run_id: str, since: float) -> bytes:
    body = {"run": run_id, "host": socket.gethostname(), "machine": _machine(), "pid": os.getpid(), "since": since}
    return json.dumps(body).encode()


def _describe(body: bytes, path: str) -> str:
    try:
        holder = json.loads(body)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(holder["since"])))
        who = f"purge {holder['run']} (host {holder['host']}, pid {holder['pid']}, since {since})"
    except (ValueError, KeyError, TypeError):
        who = "another purge"
    return f"{who} holds {path}: one purge at a time per archive (their rewrites would undo each other's)"


class _LocalLock:
    def __init__(self, path: str, run_id: str) -> None:
        self.path = path
        self._run_id = run_id
        self._fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:  # a symbolic link (ELOOP), a folder (EISDIR): not followed, not used
            raise OutputInUse(f"{self.path} cannot be the purge lock ({exc.strerror}): remove it") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OutputInUse(f"{self.path} is not a regular file and cannot be the purge lock: remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutputInUse(_describe(os.pread(fd, 4096, 0), self.path)) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder(self._run_id, time.time()), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None


class _S3Lock:
    def __init__(
        self,
        path: str,
        run_id: str,
        client: Any,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.path = path
        self._bucket, self._key = split_s3_path(path)
        self._run_id = run_id
        self._client = client
        self._heartbeat_s = heartbeat_s
        self._stale_after_s = stale_after_s
        self._since = time.time()
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str = ""  # why the lock was lost while held

    def _put(self, **condition: str) -> str:
        body = _holder(self._run_id, self._since)
        return self._client.put_object(Bucket=self._bucket, Key=self._key, Body=body, **condition)["ETag"]

    def acquire(self) -> None:
        for _ in range(_ATTEMPTS):
            if self._try_acquire():
                self._thread = threading.Thread(target=self._beat, name="purge-lock-heartbeat", daemon=True)
                self._thread.start()
                return
        raise OutputInUse(f"{self.path} changed hands {_ATTEMPTS} times while this purge tried to take it: try again")

    def _try_acquire(self) -> bool:
        """True: taken; False: it vanished or changed meanwhile (try again); raises if held."""
        from botocore.exceptions import ClientError

        try:
            self._etag = self._put(IfNoneMatch="*")
            return True
        except ClientError as exc:
            if s3_error_code(exc) not in CONDITION_FAILED:
                raise
        try:
            current = self._client.get_object(Bucket=self._bucket, Key=self._key)
        except ClientError as exc:
            if s3_error_code(exc) in ("NoSuchKey", "404"):
                return False  # released between the refused create and this read
            raise
        body = current["Body"].read()
        age = _server_time(current) - current["LastModified"].timestamp()
        if age < self._stale_after_s and not _dead_here(body):
            raise OutputInUse(_describe(body, self.path))
        try:  # a dead purge's lock: only one taker wins the write on its ETag
            self._etag = self._put(IfMatch=current["ETag"])
        except ClientError as exc:
            if s3_error_code(exc) in (*CONDITION_FAILED, "NoSuchKey", "404"):
                return False
            raise
        _LOGGER.warning("took over %s, not rewritten for %.0f s: %s", self.path, age, _describe(body, self.path))
        return True

    def _beat(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        while not self._stop.wait(self._heartbeat_s):
            try:
                self._etag = self._put(IfMatch=self._etag)
            except ClientError as exc:
                if s3_error_code(exc) in (*CONDITION_FAILED, "NoSuchKey", "404"):
                    self._lose()
                    return
                _LOGGER.warning("purge lock heartbeat failed (retried): %s", exc)
            except BotoCoreError as exc:  # connection trouble: the next beat retries
                _LOGGER.warning("purge lock heartbeat failed (retried): %s", exc)

    def _lose(self) -> None:
        self.lost = f"{self.path} was taken over by another purge while this one held it"
        _lost.append(self.lost)
        _LOGGER.error("%s: no file is replaced any more; this purge fails", self.lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._etag is None or self.lost:
            return
        head = self._client.head_object(Bucket=self._bucket, Key=self._key)
        if head["ETag"] == self._etag:  # still this purge's: remove it
            self._client.delete_object(Bucket=self._bucket, Key=self._key)
        else:
            self._lose()
        self._etag = None


def _dead_here(body: bytes) -> bool:
    """Whether the holder was a process of this machine (same boot, same pid namespace) that is
    gone: a crashed purge re-run where it ran need not wait for its lock to go stale."""
    from beam_rtbf.sinks.ledger import pid_alive

    try:
        holder = json.loads(body)
        machine = _machine()
        return bool(machine) and holder["machine"] == machine and not pid_alive(int(holder["pid"]))
    except (ValueError, KeyError, TypeError):
        return False


def _server_time(response: dict) -> float:
    from email.utils import parsedate_to_datetime

    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    return parsedate_to_datetime(date).timestamp() if date else time.time()


class PurgeLock:
    """The archive's purge lock for ``run_id``: ``acquire`` (raises ``OutputInUse`` if held), ``release``."""

    def __init__(self, archive_dir: str, run_id: str, client: Any = None, **s3_timing: float) -> None:
        self.path = lock_path(archive_dir)
        self._impl: _LocalLock | _S3Lock | None
        if "://" not in self.path:
            self._impl = _LocalLock(self.path, run_id)
        elif self.path.startswith("s3://"):
            self._impl = _S3Lock(self.path, run_id, client or s3_client(), **s3_timing)
        else:
            self._impl = None

    def acquire(self) -> None:
        if self._impl is None:
            _LOGGER.warning("no purge lock on %s: run one purge at a time on this archive", self.path)
            return
        self._impl.acquire()

    def release(self) -> None:
        """Let go; raises ``LockLost`` if an s3 lock was taken over while held."""
        if self._impl is None:
            return
        self._impl.release()
        lost = getattr(self._impl, "lost", "")
        _lost.clear()  # the process holds no lock any more
        if lost:
            raise LockLost(lost)


@contextlib.contextmanager
def purge_lock(archive_dir: str, run_id: str) -> Iterator[PurgeLock]:
    lock = PurgeLock(archive_dir, run_id)
    lock.acquire()
    _lost.clear()
    try:
        yield lock
    finally:
        lock.release()
