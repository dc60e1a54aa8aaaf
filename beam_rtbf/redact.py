"""Mask secrets in text that is printed, logged or written: passwords in URLs, secret options, tokens.

``mask_secrets`` is applied to everything beam-rtbf prints (dry runs, error messages), to
every log record (``MaskSecretsFilter`` on the CLI's log handlers) and to the URIs kept in
``summary.json``. It masks by form, so it needs no list of the secrets themselves:

    redis://:hunter2@host:6379/0                   -> redis://:***@host:6379/0
    postgresql://rtbf:hunter2@db/rtbf              -> postgresql://rtbf:***@db/rtbf
    kafka://b1:9093/t?kafka.sasl.password=hunter2  -> kafka://b1:9093/t?kafka.sasl.password=***
    Authorization: Bearer abc.def                  -> Authorization: Bearer ***

``redact_literals`` additionally replaces known secret values (the API token) wherever
they appear, whatever the form around them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

__all__ = ["MASK", "SECRET_ENV", "mask_secrets", "redact_literals", "MaskSecretsFilter", "is_secret_name"]

# Where beam-rtbf takes its secrets from: their values are masked in every log record, whatever the form.
SECRET_ENV = (
    "RTBF_ERASURE_API_TOKEN",
    "RTBF_REDIS_PASSWORD",
    "RTBF_POSTGRES_PASSWORD",
    "RTBF_KAFKA_SASL_PASSWORD",
    "RTBF_SUBJECT_HASH_KEY",
)

MASK = "***"

# scheme://[user]:PASSWORD@host — the user part may be empty (redis://:pw@host).
_URL_PASSWORD = re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)(?P<secret>[^@/\s]+)(?=@)")
# key=value where the key names a secret: URI query parameters, flags, config lines.
_SECRET_WORDS = r"(?:password|passwd|pwd|secret|token|api[_-]?key|credentials?|sasl\.jaas\.config)"
_SECRET_PARAM = re.compile(
    r"(?P<pre>(?:^|(?<=[?&;\s,'\"{(-]))[\w.-]*" + _SECRET_WORDS + r"[\w.-]*\s*=\s*)(?P<secret>[^&\s,;'\"}#)]+)",
    re.IGNORECASE,
)
# HTTP credentials, whatever header or text carries them.
_BEARER = re.compile(r"(?P<pre>\b(?:Bearer|Basic)\s+)(?P<secret>[A-Za-z0-9._~+/=-]+)")
_AUTH_HEADER = re.compile(
    r"(?P<pre>['\"]?(?:Authorization|Proxy-Authorization|X-Api-Key)['\"]?\s*[:=]\s*['\"]?)(?P<secret>[^'\"\r\n,}]+)",
    re.IGNORECASE,
)
_SECRET_NAME = re.compile(_SECRET_WORDS, re.IGNORECASE)


def _masked(match: re.Match) -> str:
    return match.group("pre") + MASK


def mask_secrets(text: str) -> str:
    """``text`` with every password in a URL, secret-named option value and bearer token masked."""
    if not isinstance(text, str) or not text:
        return text
    text = _URL_PASSWORD.sub(_masked, text)
    text = _AUTH_HEADER.sub(
        lambda m: (
            m.group("pre") + (_BEARER.sub(_masked, m.group("secret")) if _BEARER.match(m.group("secret")) else MASK)
        ),
        text,
    )
    text = _BEARER.sub(_masked, text)
    return _SECRET_PARAM.sub(lambda m: m.group(0) if m.group("secret") == MASK else _masked(m), text)


def redact_literals(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each known secret value replaced by ``***`` wherever it appears, then masked by form."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return mask_secrets(text)


def is_secret_name(name: str) -> bool:
    """True for option names that hold a secret (``s3_secret_access_key``, ``kafka.sasl.password``...)."""
    return bool(_SECRET_NAME.search(name))


class MaskSecretsFilter(logging.Filter):
    """A handler filter: the record's final message goes out with its secrets masked, by form and
    by value (the values of the ``SECRET_ENV`` variables)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the logging module's to report
            return True
        known = [value for value in (os.environ.get(name) for name in SECRET_ENV) if value and len(value) >= 4]
        masked = redact_literals(message, known)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_text:
            record.exc_text = redact_literals(record.exc_text, known)
        return True
