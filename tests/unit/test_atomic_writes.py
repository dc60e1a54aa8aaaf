"""write_bytes_atomically: the path holds the old or the new content, and a failed check keeps the old."""

from __future__ import annotations

import pytest

from beam_rtbf.sinks.files import write_bytes_atomically


def test_the_check_sees_the_new_content_before_it_replaces_the_old(tmp_path):
    target = tmp_path / "part.jsonl"
    target.write_bytes(b"old\n")
    seen = []

    def check(tmp: str) -> None:
        seen.append((tmp, open(tmp, "rb").read(), target.read_bytes()))

    write_bytes_atomically(str(target), b"new\n", check)
    ((tmp, tmp_content, target_then),) = seen
    assert tmp != str(target) and tmp_content == b"new\n" and target_then == b"old\n"
    assert target.read_bytes() == b"new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.jsonl"]


def test_a_failed_check_leaves_the_old_content_and_no_temporary_file(tmp_path):
    target = tmp_path / "part.jsonl"
    target.write_bytes(b"old\n")

    def refuse(tmp: str) -> None:
        raise RuntimeError("verification failed")

    with pytest.raises(RuntimeError, match="verification failed"):
        write_bytes_atomically(str(target), b"new\n", refuse)
    assert target.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.jsonl"]
