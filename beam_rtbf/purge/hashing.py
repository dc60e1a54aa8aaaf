"""Keyed hashes of subject ids for receipts and audit records, which must not hold the ids.

HMAC-SHA256 with a secret key: without the key a hash cannot be reversed by
hashing candidate ids (plain SHA-256 of an email can). The key comes from
``$RTBF_SUBJECT_HASH_KEY`` in production; without it a random key is created
once in a local key file (mode 0600, under the state dir, ``OUTPUT/_state`` by
default) so local runs stay consistent.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

__all__ = ["SubjectHasher", "HASH_KEY_ENV"]

HASH_KEY_ENV = "RTBF_SUBJECT_HASH_KEY"
_LOGGER = logging.getLogger(__name__)


def _load_key(key_file: str | None) -> bytes:
    env = os.environ.get(HASH_KEY_ENV)
    if env:
        return env.encode()
    if not key_file:
        raise ValueError(f"no subject-hash key: set ${HASH_KEY_ENV} or give a local --state_dir for a key file")
    path = Path(key_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        _LOGGER.warning(
            "no $%s: created a local subject-hash key in %s (set the variable in production)", HASH_KEY_ENV, path
        )
    return path.read_text().strip().encode()


class SubjectHasher:
    """``hash(id)`` -> ``hmac-sha256:<hex>``; the same id always gives the same hash under one key."""

    def __init__(self, key: bytes | None = None, key_file: str | None = None) -> None:
        self._key = key if key is not None else _load_key(key_file)

    def hash(self, subject_id: str) -> str:
        return "hmac-sha256:" + hmac.new(self._key, subject_id.encode(), hashlib.sha256).hexdigest()
