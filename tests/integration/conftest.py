"""Fixtures shared by the purge tests."""

from __future__ import annotations

import pytest

from tests.helpers.purge_setup import PurgeSetup, build


@pytest.fixture
def setup(tmp_path, registry_url, monkeypatch) -> PurgeSetup:
    """A run directory with known history and three accepted requests (``tests/helpers/purge_setup.py``)."""
    monkeypatch.setenv("RTBF_SUBJECT_HASH_KEY", "test-key")
    monkeypatch.chdir(tmp_path)
    return build(tmp_path / "a", registry_url)
