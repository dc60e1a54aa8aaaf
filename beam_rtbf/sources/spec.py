"""URI-style source specs: ``scheme://location?key=value``; one registry picks the reader."""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qsl, urlsplit

__all__ = ["SourceSpec", "parse_source_uri"]


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
