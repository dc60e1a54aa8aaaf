"""One purge at a time per output: two purges rewriting one file would undo each other's erasure.

Purge A reads a file, purge B reads it too, A writes it without A's subject and verifies,
then B writes its copy (without B's subject, with A's) over it: A's subject is back after
A's receipt said ``verified``. So a purge holds an exclusive lock from before it loads
the manifests until its receipts are written; a second purge on the same output is
refused with one line (``OutputInUse``, exit code 2) and changes nothing.

The lock is ``RECEIPTS/_runs/purge.lock`` (receipts default to ``OUTPUT/receipts``; outputs
that share an ``--archive_dir`` must share ``--receipts_dir`` too). Its body names the holder
(run, host, pid, since) for the refusal message.

- Local and mounted file systems: ``flock`` on the file, held by the purge's process. The
  kernel releases it when the process ends in any way (``kill -9`` included), so a crashed
  purge never leaves a lock behind. The file itself stays (removing it would let a waiting
  process lock an inode nobody else sees).
- ``s3://``: the object is created with ``If-None-Match: *`` (S3 conditional writes), so
  exactly one of two racing purges gets it, and rewritten with ``If-Match`` on its ETag every
  ``heartbeat_s`` while held. A lock whose last write (the server's ``Last-Modified`` against
  the server's ``Date``: no client clock) is older than ``stale_after_s``, or whose holder was
  a process of this host that is gone (a crashed purge re-run where it ran), belongs to a dead
  purge: it is taken over by a conditional write on its ETag, so two takers cannot both win.
  Released by deleting it, after checking it is still this holder's.
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
import threading
import time
from collections.abc import Iterator
from typing import Any

from beam_rtbf.sinks.files import join

__all__ = ["LOCK_NAME", "PurgeLock", "LockLost", "purge_lock", "lock_path"]

_LOGGER = logging.getLogger(__name__)

LOCK_NAME = "purge.lock"
HEARTBEAT_S = 30.0  # s3: how often a held lock is rewritten
STALE_AFTER_S = 300.0  # s3: a lock not rewritten for this long belongs to a dead purge


class LockLost(RuntimeError):
    """An s3 lock this purge held was taken over (its heartbeats stopped for ``stale_after_s``)."""


def lock_path(receipts_dir: str) -> str:
    return join(receipts_dir, "_runs", LOCK_NAME)


def _holder(run_id: str) -> dict[str, Any]:
    return {"run": run_id, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}


def _describe(body: bytes, path: str) -> str:
    try:
        holder = json.loads(body)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(holder["since"])))
        who = f"purge {holder['run']} (host {holder['host']}, pid {holder['pid']}, since {since})"
    except (ValueError, KeyError, TypeError):
        who = "another purge"
    return f"{who} holds {path}: one purge at a time per output (their rewrites would undo each other's)"


class _LocalLock:
    def __init__(self, path: str, run_id: str) -> None:
        self.path = path
        self._run_id = run_id
        self._fd: int | None = None

    def acquire(self) -> None:
        from beam_rtbf.job import OutputInUse

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            body = os.pread(fd, 4096, 0)
            os.close(fd)
            raise OutputInUse(_describe(body, self.path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder(self._run_id)).encode(), 0)
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
        self._bucket, _, self._key = path[len("s3://") :].partition("/")
        self._run_id = run_id
        self._client = client
        self._heartbeat_s = heartbeat_s
        self._stale_after_s = stale_after_s
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str = ""  # why the lock was lost while held (the heartbeat's conditional write failed)

    def _put(self, **condition: str) -> str:
        body = json.dumps(_holder(self._run_id)).encode()
        return self._client.put_object(Bucket=self._bucket, Key=self._key, Body=body, **condition)["ETag"]

    def acquire(self) -> None:
        from botocore.exceptions import ClientError

        from beam_rtbf.job import OutputInUse

        try:
            self._etag = self._put(IfNoneMatch="*")
        except ClientError as exc:
            if _code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise
            current = self._client.get_object(Bucket=self._bucket, Key=self._key)
            body = current["Body"].read()
            server_now = _server_time(current)
            age = server_now - current["LastModified"].timestamp()
            if age < self._stale_after_s and not _dead_here(body):
                raise OutputInUse(_describe(body, self.path)) from None
            try:  # a dead purge's lock: only one taker wins the write on its ETag
                self._etag = self._put(IfMatch=current["ETag"])
            except ClientError as taken:
                if _code(taken) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "NoSuchKey"):
                    raise OutputInUse(_describe(body, self.path)) from None
                raise
            _LOGGER.warning("took over %s, not rewritten for %.0f s: %s", self.path, age, _describe(body, self.path))
        self._thread = threading.Thread(target=self._beat, name="purge-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        while not self._stop.wait(self._heartbeat_s):
            try:
                self._etag = self._put(IfMatch=self._etag)
            except ClientError as exc:
                if _code(exc) in ("PreconditionFailed", "412", "NoSuchKey", "ConditionalRequestConflict"):
                    self.lost = f"{self.path} was taken over by another purge while this one held it"
                    _LOGGER.error(self.lost)
                    return
                _LOGGER.warning("purge lock heartbeat failed (retried): %s", exc)
            except BotoCoreError as exc:  # connection trouble: the next beat retries
                _LOGGER.warning("purge lock heartbeat failed (retried): %s", exc)

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
            self.lost = f"{self.path} was taken over by another purge while this one held it"
        self._etag = None


def _dead_here(body: bytes) -> bool:
    """Whether the holder was a process of this host that is gone (a crashed purge re-run here
    need not wait for its lock to go stale)."""
    from beam_rtbf.sinks.ledger import pid_alive

    try:
        holder = json.loads(body)
        return holder["host"] == socket.gethostname() and not pid_alive(int(holder["pid"]))
    except (ValueError, KeyError, TypeError):
        return False


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


def _server_time(response: dict) -> float:
    from email.utils import parsedate_to_datetime

    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    return parsedate_to_datetime(date).timestamp() if date else time.time()


class PurgeLock:
    """The output's purge lock for ``run_id``: ``acquire`` (raises ``OutputInUse`` if held), ``release``."""

    def __init__(self, receipts_dir: str, run_id: str, client: Any = None, **s3_timing: float) -> None:
        self.path = lock_path(receipts_dir)
        self._impl: _LocalLock | _S3Lock | None
        if "://" not in self.path:
            self._impl = _LocalLock(self.path, run_id)
        elif self.path.startswith("s3://"):
            if client is None:
                from beam_rtbf.sinks.versions import s3_client

                client = s3_client()
            self._impl = _S3Lock(self.path, run_id, client, **s3_timing)
        else:
            self._impl = None

    def acquire(self) -> None:
        if self._impl is None:
            _LOGGER.warning("no purge lock on %s: run one purge at a time on this output", self.path)
            return
        self._impl.acquire()

    def release(self) -> None:
        """Let go; raises ``LockLost`` if an s3 lock was taken over while held (the purge's rewrites
        may have raced another purge's: its receipts must not be trusted)."""
        if self._impl is None:
            return
        self._impl.release()
        lost = getattr(self._impl, "lost", "")
        if lost:
            raise LockLost(lost)


@contextlib.contextmanager
def purge_lock(receipts_dir: str, run_id: str) -> Iterator[PurgeLock]:
    lock = PurgeLock(receipts_dir, run_id)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
