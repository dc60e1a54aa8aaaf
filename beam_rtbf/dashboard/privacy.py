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
from collections.abc import Iterable
from pathlib import Path

from beam_rtbf.purge.hashing import HASH_KEY_ENV, SubjectHasher

__all__ = ["load_hasher", "request_ref", "Redactor", "reason_category", "REDACTED"]

_LOGGER = logging.getLogger(__name__)
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
    aliases, request ids)."""

    _WORD = "A-Za-z0-9_"

    def __init__(self, identifiers: Iterable[str]) -> None:
        ids = sorted({i for i in identifiers if i})
        self._pattern = re.compile(rf"(?<![{self._WORD}])(?:{_trie_regex(ids)})(?![{self._WORD}])") if ids else None

    def __call__(self, text: str | None) -> str | None:
        if not text or self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def found(self, text: str) -> bool:
        """True when ``text`` still holds an identifier (what the tests and the server's guard check)."""
        return bool(self._pattern and self._pattern.search(text))


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
