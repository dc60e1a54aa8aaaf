"""Hostile identifiers and request ids, in one place: every case found later is added here.

Tests import these lists; each case states what must come out.
"""

from __future__ import annotations

# Request ids that once became file names: each must stay an opaque key, its manifest and receipt
# a plain file inside their folders, and its request purged like any other.
HOSTILE_REQUEST_IDS = (
    "../../x",
    "/tmp/rtbf-abs-escape",
    "a/b",
    ".tmp-x",
    "..",
    "CON",
    "x" * 100,
    "with space and \u00e9",
    "semi;colon|pipe*star?",
)

# name -> (canonical form, spellings of the same identifier); the last spelling is the one the
# erasure request uses. Every spelling must be filtered and purged as the canonical form.
SPELLINGS = {
    "email-case-and-padding": (
        "alice@example.com",
        ["Alice@Example.COM", " alice@example.com", "ALICE@EXAMPLE.COM\t", "alice@Example.com "],
    ),
    "unicode-nfd-vs-nfc": ("jos\u00e9", ["jose\u0301", "jos\u00e9", " jose\u0301"]),
    "zero-width": ("mallory", ["mal\u200blory", "\ufeffmallory", "mallory\u200d", "mallory"]),
}
