"""Deduplication by event id: the bounded memory of seen ids, and a bounded run with repeats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from beam_rtbf.parse.dedupe import SeenIds
from beam_rtbf.pipeline import run
from tests.helpers.data import archive_rows


def test_seen_ids_drop_repeats_within_and_across_batches_and_forget_the_oldest_generation():
    seen = SeenIds(capacity=4)
    assert seen.new_mask(np.array([1, 2, 2, 3], dtype=np.uint64)).tolist() == [True, True, False, True]
    assert seen.new_mask(np.array([3, 4, 1], dtype=np.uint64)).tolist() == [False, True, False]
    assert seen.new_mask(np.array([5], dtype=np.uint64)).tolist() == [True]  # 1-4 full: 5 opens a generation
    assert seen.new_mask(np.array([1, 5], dtype=np.uint64)).tolist() == [False, False]  # 1 still remembered
    assert seen.new_mask(np.array([6, 7, 8, 9], dtype=np.uint64)).tolist() == [True] * 4  # 1-4 forgotten now
    assert seen.new_mask(np.array([1, 5, 9], dtype=np.uint64)).tolist() == [True, False, False]


def test_seen_ids_against_a_reference_on_random_streams():
    """Never a first-seen id dropped; every repeat among the last ``capacity`` distinct ids dropped;
    memory between ``capacity`` and twice it; sorted runs few (a binary counter)."""
    rng = np.random.default_rng(7)
    capacity = 1_000
    seen = SeenIds(capacity)
    history: list[int] = []  # distinct ids in the order first seen (the reference)
    ever: set[int] = set()
    for _ in range(400):
        batch = rng.integers(0, 6_000, int(rng.integers(1, 60)), dtype=np.uint64)
        fresh = seen.new_mask(batch)
        recent = set(history[-capacity:])
        first_in_batch: set[int] = set()
        for value, is_fresh in zip(batch.tolist(), fresh.tolist()):
            if value in recent or value in first_in_batch:
                assert not is_fresh, value  # a repeat the memory must hold
            elif value not in ever:
                assert is_fresh, value  # never seen: always kept
            if is_fresh:
                history.append(value)
                ever.add(value)
            first_in_batch.add(value)
        assert len(seen) <= 2 * capacity and len(seen) >= min(len(history), capacity)
        assert len(seen.current) <= 12
        assert all(np.all(run[:-1] <= run[1:]) for run in (*seen.current, *seen.previous))


@pytest.mark.slow
def test_bounded_run_with_dedupe_counts_every_repeat(tmp_path, registry_url):
    lines = [
        json.dumps({"user_id": f"u{i % 7}", "event_id": f"e{i}", "event_time": 1767225600000 + i}) for i in range(1000)
    ]
    repeats = lines[:150] + lines[500:550]
    no_id = [json.dumps({"user_id": "anon", "event_time": 1767225600000})] * 3  # no event_id: never dropped
    sessions = tmp_path / "s.jsonl"
    sessions.write_text("\n".join(lines + repeats + no_id) + "\n")
    requests = tmp_path / "r.jsonl"
    requests.write_text("")
    summary = run(
        [
            f"--output={tmp_path / 'out'}",
            f"--registry={registry_url}",
            "--dedupe=on",
            f"--sessions=file://{sessions}",
            f"--requests=file://{requests}",
        ]
    )
    assert (summary["sessions_in"], summary["duplicates"], summary["clean"]) == (1203, 200, 1003)
    assert summary["conservation_ok"] is True
    ids = archive_rows(str(tmp_path / "out")).column("event_id").to_pylist()
    assert sorted(i for i in ids if i) == sorted(f"e{i}" for i in range(1000)) and ids.count(None) == 3
