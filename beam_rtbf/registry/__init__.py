"""Deletion registry: the durable record of who is forgotten (see ``base``)."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from beam_rtbf.registry.base import DeletionRegistry, RegistryDelta, RegistryUnavailable, RequestEvent

__all__ = [
    "DeletionRegistry",
    "RegistryDelta",
    "RegistryUnavailable",
    "RequestEvent",
    "open_registry",
]


def open_registry(url: str) -> DeletionRegistry:
    """Open a registry by URL: ``embedded://PATH`` (SQLite file) or ``redis[s]://HOST:PORT/DB[?prefix=P]``.

    The Redis password comes from ``$RTBF_REDIS_PASSWORD``.
    """
    parsed = urlparse(url)
    if parsed.scheme == "embedded":
        path = url[len("embedded://") :]
        if not path:
            raise ValueError("embedded registry URL needs a path, e.g. embedded://./rtbf-registry.sqlite")
        from beam_rtbf.registry.embedded import EmbeddedRegistry

        return EmbeddedRegistry(os.path.expanduser(path))
    if parsed.scheme in ("redis", "rediss"):
        from beam_rtbf.registry.redis_backend import RedisRegistry

        return RedisRegistry(url)
    raise ValueError(f"unsupported registry URL {url!r}: use embedded://PATH, redis://HOST:PORT/DB or rediss://...")
