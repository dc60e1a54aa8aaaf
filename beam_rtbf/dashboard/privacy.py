"""What the dashboard shows instead of identifiers: keyed hashes, and a last-line redactor.

Manifests and the registry hold raw subject ids and request ids (a request id is chosen
by whoever files the request and can contain an e-mail address). The dashboard names a
request by ``request_ref`` (a keyed hash of its id, under the same key as the receipts'
subject hashes) and a subject by its receipt hash. Free texts taken from receipts or dead
letters (verification details, API replies, reasons) go through ``Redactor``, which
replaces every identifier the registry and manifests know, as a whole token.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from beam_rtbf.identifiers import ZERO_WIDTH, canonical_id
from beam_rtbf.purge.hashing import HASH_KEY_ENV, SubjectHasher

__all__ = ["load_hasher", "request_ref", "Redactor", "reason_category", "REDACTED"]

_LOGGER = logging.getLogger(__name__)
_ZERO_WIDTH_RE = re.compile(f"[{ZERO_WIDTH}]")
REDACTED = "[redacted]"
REF_HEX_CHARS = 16  # 64 bits: unique among millions of requests, short enough to read aloud


def load_hasher(key_file: str | None) -> SubjectHasher:
    """The receipts' hasher, without creating a key (the dashboard writes nothing).

    ``$RTBF_SUBJECT_HASH_KEY``, else the state folder's key file; with neither (no purge has
    run yet), a random key for this process: refs stay stable while it runs, and no hash
    shown can be matched against anything.
    """
    if os.environ.get(HASH_KEY_ENV):
        return SubjectHasher(key=os.environ[HASH_KEY_ENV].encode())
    if key_file and Path(key_file).is_file():
        return SubjectHasher(key_file=key_file)
    _LOGGER.warning(
        "no subject-hash key (no $%s, no key file %s): hashes shown are valid for this process only",
        HASH_KEY_ENV,
        key_file or "(no state folder)",
    )
    return SubjectHasher(key=secrets.token_hex(32).encode())


def request_ref(hasher: SubjectHasher, request_id: str) -> str:
    """A request's public name: ``r-`` and 16 hex of a keyed hash of its id (never the id).

    The id is hashed in a domain of its own, so a request id equal to a subject id does
    not give that subject's hash away."""
    digest = hasher.hash("request-id\x00" + request_id).partition(":")[2]
    return "r-" + digest[:REF_HEX_CHARS]


def _trie_regex(words: Iterable[str]) -> str:
    """One regex for many words, factored by common prefixes: at each position the engine tests a
    handful of first characters instead of every word (a thousand ids cost about as much as ten)."""
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(trie)


class Redactor:
    """Replaces known identifiers in free text, each where it stands as a token of its own or a part
    of a longer one that is not a word (``u12`` is not cut out of ``u123``, but is out of
    ``u12@example.com``); an identifier is whatever the registry and manifests name (subject ids,
    aliases, request ids).

    Matching is in the project's canonical form (``identifiers.canonical_id``), as the filter and
    the purge compare: zero-width characters and Unicode spelling (NFC/NFD) do not hide an
    identifier, nor does the case of an e-mail address (``Zoe@Example.COM`` is ``zoe@example.com``);
    other ids keep their case. What is returned is the text in NFC without zero-width characters.
    """

    _WORD = "A-Za-z0-9_"

    def __init__(self, identifiers: Iterable[str]) -> None:
        exact: set[str] = set()
        folded: set[str] = set()
        for raw in identifiers:
            if not raw:
                continue
            canonical = canonical_id(raw)
            if not canonical:
                continue
            (folded if "@" in canonical else exact).add(canonical)
        self._exact = self._compile(frozenset(exact))
        self._folded = self._compile(frozenset(folded))

    _COMPILED: dict[frozenset, re.Pattern] = {}  # the few latest sets: a page view rebuilds with the same ids
    _COMPILED_LOCK = threading.Lock()

    @classmethod
    def _compile(cls, ids: frozenset[str]) -> re.Pattern | None:
        """One pattern for ``ids``; compiling tens of thousands takes seconds, so the latest few are kept."""
        if not ids:
            return None
        with cls._COMPILED_LOCK:
            known = cls._COMPILED.get(ids)
        if known is not None:
            return known
        pattern = re.compile(rf"(?<![{cls._WORD}])(?:{_trie_regex(sorted(ids))})(?![{cls._WORD}])")
        with cls._COMPILED_LOCK:
            cls._COMPILED[ids] = pattern
            while len(cls._COMPILED) > 4:
                cls._COMPILED.pop(next(iter(cls._COMPILED)))
        return pattern

    @property
    def _pattern(self) -> bool:  # any identifier known at all
        return self._exact is not None or self._folded is not None

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """Where identifiers stand in ``text`` (already without zero-width characters, in NFC)."""
        spans = [m.span() for m in self._exact.finditer(text)] if self._exact is not None else []
        if self._folded is not None:
            folded = text.casefold()
            if len(folded) == len(text):  # casefold never shortens a character: here each stayed one
                spans += [m.span() for m in self._folded.finditer(folded)]
            else:
                origin: list[int] = []
                pieces = []
                for i, ch in enumerate(text):
                    f = ch.casefold()
                    pieces.append(f)
                    origin.extend([i] * len(f))
                origin.append(len(text))
                for m in self._folded.finditer("".join(pieces)):
                    start, end = m.span()
                    spans.append((origin[start], origin[end - 1] + 1 if end > start else origin[start]))
        return spans

    @staticmethod
    def _normal(text: str) -> str:
        return unicodedata.normalize("NFC", _ZERO_WIDTH_RE.sub("", text))

    def __call__(self, text: str | None) -> str | None:
        if not text or not self._pattern:
            return text
        text = self._normal(text)
        spans = sorted(self._spans(text))
        if not spans:
            return text
        out, at = [], 0
        for start, end in spans:
            if end <= at:
                continue
            out.append(text[at : max(start, at)])
            if start >= at:
                out.append(REDACTED)
            at = end
        out.append(text[at:])
        return "".join(out)

    def found(self, text: str) -> bool:
        """True when ``text`` still holds an identifier (what the tests and the server's guard check)."""
        return bool(text) and self._pattern and bool(self._spans(self._normal(text)))


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_POSITION = re.compile(r"\b(line|column|col|byte|char|offset|position|row)\s+\d+", re.IGNORECASE)


def reason_category(reason: str) -> str:
    """A dead letter's reason as a category: quoted values and positions masked.

    A parser's reason may quote the bad value (``non-numeric secs_elapsed 'fast'``, ``bad time
    'alice@example.com'``): the dashboard shows the kind of problem, never the value. Positions
    would make one category per line (``malformed JSON: Expecting value at column N``).
    """
    text = _QUOTED.sub("'…'", reason or "no reason given")
    text = _POSITION.sub(lambda m: f"{m.group(1)} N", text)
    return " ".join(text.split())[:160]
