"""URI-style source specs: ``scheme://location?key=value``; one registry picks the reader.

Each source declares the parameter names it reads (``Source.PARAMS``, and
``Source.PARAM_PREFIXES`` for pass-through families such as ``kafka.*``);
``check_params`` refuses any other name, so a typo (``?grup=g``) is an error
rather than a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlsplit

from beam_rtbf.redact import mask_secrets

__all__ = ["SourceSpec", "parse_source_uri", "check_params"]


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    uri: str
    scheme: str
    location: str  # host + path, e.g. a glob for file://, "sessions" for synthetic://
    params: dict[str, str]

    def get_int(self, key: str, default: int | None = None) -> int | None:
        return _typed(self, key, default, int)

    def get_float(self, key: str, default: float | None = None) -> float | None:
        return _typed(self, key, default, float)

    def get_str(self, key: str, default: str | None = None) -> str | None:
        return self.params.get(key, default)


def _typed(spec: SourceSpec, key: str, default, kind):
    if key not in spec.params:
        return default
    try:
        return kind(spec.params[key])
    except ValueError:
        raise ValueError(
            f"source {spec.uri!r}: parameter {key}={spec.params[key]!r} is not a valid {kind.__name__}"
        ) from None


def parse_source_uri(uri: str) -> SourceSpec:
    if "://" not in uri:
        raise ValueError(f"source {uri!r} is not a URI: use file://GLOB, synthetic://sessions?..., or another scheme")
    parts = urlsplit(uri)
    location = parts.netloc + parts.path
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    return SourceSpec(uri=uri, scheme=parts.scheme.lower(), location=location, params=params)


def check_params(spec: SourceSpec, names: Sequence[str], prefixes: Sequence[str] = ()) -> None:
    """Raise a one-line ``ValueError`` if ``spec`` has a parameter outside ``names``/``prefixes``.

    The message names each unknown parameter, the closest valid one, and every valid
    name; the URI in it has its secrets masked."""
    unknown = [key for key in spec.params if key not in names and not key.startswith(tuple(prefixes))]
    if not unknown:
        return
    problems = []
    for key in unknown:
        guess = _closest(key, names, prefixes)
        problems.append(f"{key!r} (did you mean {guess!r}?)" if guess else repr(key))
    valid = [*names, *(f"{prefix}*" for prefix in prefixes)]
    noun = "parameter" if len(unknown) == 1 else "parameters"
    raise ValueError(
        f"source {mask_secrets(spec.uri)!r}: unknown {noun} {', '.join(problems)}; "
        f"valid: {', '.join(valid) if valid else '(none)'}"
    )


def _closest(key: str, names: Sequence[str], prefixes: Sequence[str]) -> str | None:
    head, dot, rest = key.partition(".")
    for prefix in prefixes:
        if dot and difflib.get_close_matches(head + dot, [prefix], n=1, cutoff=0.6):
            return prefix + rest  # kafak.sasl.username -> kafka.sasl.username
        if dot:
            return prefix + key  # sasl.username -> kafka.sasl.username
    matches = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
    return matches[0] if matches else None
