"""Shared fixtures: temporary registries and output folders."""

from __future__ import annotations

import logging

import pytest

# Beam's import prints a warning about an optional GCP client it does not need here.
logging.getLogger().setLevel(logging.ERROR)


@pytest.fixture
def registry_url(tmp_path) -> str:
    return f"embedded://{tmp_path / 'registry.sqlite'}"
