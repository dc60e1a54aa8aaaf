"""The subject-hash key: created once, atomically, shared by every process that races to create it."""

from __future__ import annotations

import multiprocessing
import os
import stat

import pytest

from beam_rtbf.purge.hashing import HASH_KEY_ENV, SubjectHasher

PROCESSES = 8


def _hash_after(barrier, key_file: str, results) -> None:
    os.environ.pop(HASH_KEY_ENV, None)
    barrier.wait()
    try:
        results.put(SubjectHasher(key_file=key_file).hash("alice"))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"error: {exc!r}")


@pytest.mark.slow
def test_processes_racing_to_create_the_key_all_get_the_same_non_empty_key(tmp_path):
    context = multiprocessing.get_context("fork")
    for round_ in range(10):
        key_file = tmp_path / f"round-{round_}" / "subject.key"
        key_file.parent.mkdir()
        barrier, results = context.Barrier(PROCESSES), context.Queue()
        workers = [
            context.Process(target=_hash_after, args=(barrier, str(key_file), results)) for _ in range(PROCESSES)
        ]
        for worker in workers:
            worker.start()
        hashes = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        assert len(set(hashes)) == 1 and hashes[0].startswith("hmac-sha256:"), hashes
        key = key_file.read_text()
        assert len(key) == 64 and int(key, 16) >= 0
        assert SubjectHasher(key=key.encode()).hash("alice") == hashes[0]
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert os.listdir(key_file.parent) == ["subject.key"]  # no temporary file left behind


@pytest.mark.parametrize("content", ["", "\n", "abc123"])
def test_an_empty_or_short_key_file_is_refused(tmp_path, monkeypatch, content):
    monkeypatch.delenv(HASH_KEY_ENV, raising=False)
    key_file = tmp_path / "subject.key"
    key_file.write_text(content)
    with pytest.raises(ValueError, match=rf"subject-hash key file {key_file} is (empty|too short) \("):
        SubjectHasher(key_file=str(key_file))
