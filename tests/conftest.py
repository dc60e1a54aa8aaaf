"""Shared fixtures: temporary registries and output folders."""

from __future__ import annotations

import glob
import logging
import os
import tempfile

import pytest

# Beam's import prints a warning about an optional GCP client it does not need here.
logging.getLogger().setLevel(logging.ERROR)


@pytest.fixture
def registry_url(tmp_path) -> str:
    return f"embedded://{tmp_path / 'registry.sqlite'}"


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_beam_temp_folders():
    """Beam makes an empty ``beam-pipeline-temp*`` folder in $TMPDIR for every Pipeline object and
    removes it only after a run; tests that build a graph without running it left hundreds a day.
    Its job servers (Flink, Spark, Prism) make a ``beam-temp*`` folder removed only at a clean exit:
    runs the tests kill leave it. The ones this session made and left empty are
    removed at its end (others are not touched)."""
    patterns = [os.path.join(tempfile.gettempdir(), p) for p in ("beam-pipeline-temp*", "beam-temp*")]
    before = {f for pattern in patterns for f in glob.glob(pattern)}
    yield
    for folder in {f for pattern in patterns for f in glob.glob(pattern)} - before:
        try:
            os.rmdir(folder)  # only if empty: a folder with content is somebody's, left alone
        except OSError:
            pass
