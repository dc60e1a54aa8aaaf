"""Fixtures that start real servers for integration tests."""

from __future__ import annotations

import pytest

from beam_rtbf.testing.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(str(tmp_path / "redis"))
    server.start()
    yield server
    server.stop()
