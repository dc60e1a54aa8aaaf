"""Keyed hashes of subject ids for receipts and audit records, which must not hold the ids.

HMAC-SHA256 with a secret key: without the key a hash cannot be reversed by
hashing candidate ids (plain SHA-256 of an email can). The key comes from
``$RTBF_SUBJECT_HASH_KEY`` in production; without it a random key is created
once in a local key file (mode 0600, under the state dir, ``OUTPUT/_state`` by
default) so local runs stay consistent.

The key file appears complete or not at all: the key is written to a temporary
file (0600) and fsynced, then hard-linked into place, which fails if another
process got there first; that process's key is then the one read. An empty or
short key file is refused (a hash under it would be guessable and differ from
every earlier hash).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from pathlib import Path

__all__ = ["SubjectHasher", "HASH_KEY_ENV"]

HASH_KEY_ENV = "RTBF_SUBJECT_HASH_KEY"
MIN_KEY_CHARS = 32  # a created key has 64 hex characters (256 bits)
_LOGGER = logging.getLogger(__name__)


def _create_key_file(path: Path) -> bool:
    """Publish a new random key at ``path`` atomically; False if another process published one first."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # atomic and exclusive: the file appears complete, the first one wins
        except FileExistsError:
            return False
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True
    finally:
        os.unlink(tmp)


def _read_key(path: Path) -> bytes:
    key = path.read_text().strip()
    if len(key) < MIN_KEY_CHARS:
        raise ValueError(
            f"subject-hash key file {path} is {'empty' if not key else 'too short'} ({len(key)} characters, "
            f"at least {MIN_KEY_CHARS} needed): restore it, or set ${HASH_KEY_ENV}; a new key changes every hash"
        )
    return key.encode()


def _load_key(key_file: str | None) -> bytes:
    env = os.environ.get(HASH_KEY_ENV)
    if env:
        return env.encode()
    if not key_file:
        raise ValueError(f"no subject-hash key: set ${HASH_KEY_ENV} or give a local --state_dir for a key file")
    path = Path(key_file).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() and _create_key_file(path):
        _LOGGER.warning(
            "no $%s: created a local subject-hash key in %s (set the variable in production)", HASH_KEY_ENV, path
        )
    return _read_key(path)


class SubjectHasher:
    """``hash(id)`` -> ``hmac-sha256:<hex>``; the same id always gives the same hash under one key."""

    def __init__(self, key: bytes | None = None, key_file: str | None = None) -> None:
        self._key = key if key is not None else _load_key(key_file)

    def hash(self, subject_id: str) -> str:
        return "hmac-sha256:" + hmac.new(self._key, subject_id.encode(), hashlib.sha256).hexdigest()
