"""Deduplication by event id: the bounded memory of seen ids, and a bounded run with repeats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from beam_rtbf.parse.dedupe import SeenIds
from beam_rtbf.pipeline import run
from tests.helpers.data import archive_rows


def test_seen_ids_drop_repeats_within_and_across_batches_and_forget_the_oldest():
    seen = SeenIds(capacity=4)
    assert seen.new_mask(np.array([1, 2, 2, 3], dtype=np.uint64)).tolist() == [True, True, False, True]
    assert seen.new_mask(np.array([3, 4, 1], dtype=np.uint64)).tolist() == [False, True, False]
    assert seen.new_mask(np.array([5], dtype=np.uint64)).tolist() == [True]  # now remembers 2, 3, 4, 5
    assert seen.new_mask(np.array([1, 5], dtype=np.uint64)).tolist() == [True, False]  # 1 was forgotten


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
