"""The splittable-DoFn restriction of ReadFromPoller: progress by checkpoints, splits hand on the rest."""

from __future__ import annotations

import pytest

from beam_rtbf.sources.polling import PollerPosition, PositionTracker


def test_claims_then_a_split_hands_the_last_checkpoint_to_the_residual():
    tracker = PositionTracker(PollerPosition({"shard-0": "10"}))
    assert tracker.try_claim({"shard-0": "20"})
    assert tracker.try_claim({"shard-0": "35"})
    primary, residual = tracker.try_split(0)
    assert primary == PollerPosition({"shard-0": "10"}, done=True)
    assert residual == PollerPosition({"shard-0": "35"}, done=False)
    assert tracker.current_restriction() == primary
    assert not tracker.try_claim({"shard-0": "40"})  # nothing more after a split
    tracker.check_done()
    assert tracker.try_split(0) is None


def test_end_of_source_is_done_and_cannot_split():
    tracker = PositionTracker(PollerPosition({}))
    assert tracker.try_claim({"p": 1})
    assert tracker.try_claim(None)
    tracker.check_done()
    assert tracker.try_split(0) is None
    assert not tracker.try_claim({"p": 2})


def test_stopping_without_end_or_split_is_an_error():
    tracker = PositionTracker(PollerPosition({}))
    tracker.try_claim({"p": 1})
    with pytest.raises(ValueError, match="without reaching the end or a checkpoint"):
        tracker.check_done()
    assert tracker.is_bounded() is False
