"""Fixtures shared by the purge tests and the PostgreSQL analytics sink tests."""

from __future__ import annotations

import pytest

from beam_rtbf.sinks import postgres as pg
from beam_rtbf.testing.postgres_server import PostgresServer
from tests.helpers.postgres_analytics import SECRET
from tests.helpers.purge_setup import PurgeSetup, build


@pytest.fixture
def setup(tmp_path, registry_url, monkeypatch) -> PurgeSetup:
    """A run directory with known history and three accepted requests (``tests/helpers/purge_setup.py``)."""
    monkeypatch.setenv("RTBF_SUBJECT_HASH_KEY", "test-key")
    monkeypatch.chdir(tmp_path)
    return build(tmp_path / "a", registry_url)


@pytest.fixture(scope="module")
def pg_server():
    db = PostgresServer(password=SECRET)
    db.start()
    yield db
    db.close()


@pytest.fixture
def pg_sink(pg_server, request, monkeypatch) -> str:
    """A table of this test's own on the module's server; the password in the environment only."""
    monkeypatch.setenv(pg.PASSWORD_ENV, SECRET)
    monkeypatch.setenv("RTBF_SUBJECT_HASH_KEY", "test-key")
    return pg_server.sink_uri(getattr(request.module, "TABLE_PREFIX", "t_") + request.node.name.split("[")[0][5:45])
