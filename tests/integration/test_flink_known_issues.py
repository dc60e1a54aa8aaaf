"""What Beam 2.62's Flink runner does wrong for Python streaming, shown by minimal pipelines
(``tests/helpers/beam_repros.py``, no beam-rtbf code). beam-rtbf works around each; when a Beam
upgrade fixes one, its test fails here and the workaround can go.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers.engine_runs import ROOT
from tests.helpers.netns import run_in_netns

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _repro(name: str) -> dict:
    done = run_in_netns([sys.executable, "-m", "tests.helpers.beam_repros", name], 600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_streaming_stage_with_a_side_input_cannot_be_checkpointed():
    """Every checkpoint is declined ("... cannot be cast to class ...WindowedValue": the side input's
    state is declared with a windowed-value coder but holds bare values) and the job restarts.
    beam-rtbf refuses broadcast/bloom with --checkpointing_interval (filter/strategies.py)."""
    got = _repro("side_input_checkpoint")
    assert got["cast_error"] and got["declined"] >= 1, got


def test_a_global_side_input_is_read_once_unless_the_dofn_takes_its_window():
    """apache/beam#28776: Beam's Python invoker caches global-window side input arguments for the
    DoFn's life (its opt-out experiment does not reach LOOPBACK workers); a window parameter turns
    the caching off. beam-rtbf's DropForgottenFn and bloom filter take one (filter/broadcast.py)."""
    got = _repro("global_side_input_refresh")
    print(got)
    assert got["plain"]["reads"] >= 5 and got["windowed"]["reads"] >= 5, got
    assert got["plain"]["last_age_s"] > 15, got  # the first value, read ever after
    # Refreshed about every second; a loaded machine delays both reads alike, never by the run's length.
    assert got["windowed"]["last_age_s"] < got["plain"]["last_age_s"] / 3, got
