"""One canonical identifier form: the vectorised twin gives exactly what ``canonical_id`` gives."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from beam_rtbf.identifiers import canonical_array, canonical_id, canonical_ids
from beam_rtbf.records import ErasureRequest
from beam_rtbf.sinks.files import safe_file_name
from tests.adversarial import HOSTILE_REQUEST_IDS, SPELLINGS

TRICKY = [
    "u1",
    " Bob@X.com ",
    "e\u0301",
    "\u200bu2",
    "plain",
    "A@B",
    "x\x1f",
    "ok ",
    "",
    "Up@",
    "U",
    "a@b",
    " \u00c9X@Y ",
    "\t\n",
    "\u200b",
    "Stra\u00dfe@example.com",  # casefold: ss
    "\u00a0nbsp\u00a0",
    "caf\u00e9\u200d",
    "\x00nul",
    "end\x7f",
    "@",
    "MiXeD-Case-Id",
]


@pytest.mark.parametrize("name", sorted(SPELLINGS))
def test_every_spelling_has_the_one_canonical_form(name):
    canonical, spellings = SPELLINGS[name]
    assert {canonical_id(s) for s in spellings} == {canonical}
    assert set(canonical_array(pa.array(spellings)).to_pylist()) == {canonical}


def test_rules():
    assert canonical_id("  Alice@Example.COM\u200b ") == "alice@example.com"  # e-mail: case-folded
    assert canonical_id("MiXeD-Case-Id") == "MiXeD-Case-Id"  # other ids keep their case
    assert canonical_id("Stra\u00dfe@example.com") == "strasse@example.com"
    assert canonical_id("\u200b") == ""
    assert canonical_ids(["b", " b", "", "\u200b", "a"]) == ("b", "a")


def test_vectorised_equals_scalar_on_tricky_and_random_values():
    rng = random.Random(7)
    alphabet = "aZ@ .\t\u200b\u00e9e\u0301\u00df\x1f-"
    values = TRICKY + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(3000)]
    values += [None, None]
    rng.shuffle(values)
    array = pa.array(values, pa.string())
    expected = [None if v is None else canonical_id(v) for v in values]
    assert canonical_array(array).to_pylist() == expected
    for start, length in ((1, 50), (17, 1000), (2999, 3)):  # sliced arrays (offsets into the buffers)
        assert canonical_array(array.slice(start, length)).to_pylist() == expected[start : start + length]
    chunked = pa.chunked_array([array.slice(0, 10), array.slice(10)])
    assert canonical_array(chunked).to_pylist() == expected


def test_clean_values_come_back_unchanged():
    clean = pa.array([f"u{i:07d}" for i in range(1000)] + ["user@example.com", None])
    assert canonical_array(clean) is clean


def test_requests_name_their_subjects_canonically():
    request = ErasureRequest("r", " jose\u0301 ", 0, aliases=("Jos\u00e9@Example.com", "jos\u00e9", " "))
    assert request.subject_ids == ("jos\u00e9", "jos\u00e9@example.com")


def test_safe_file_names():
    names = {safe_file_name(r) for r in HOSTILE_REQUEST_IDS}
    assert len(names) == len(HOSTILE_REQUEST_IDS)  # distinct ids, distinct names
    for name in names:
        assert "/" not in name and not name.startswith(".") and name.endswith(".json") and len(name) < 80
    assert safe_file_name("a/b") != safe_file_name("a_b")
    assert safe_file_name("req-42").startswith("req-42-")  # still recognisable
