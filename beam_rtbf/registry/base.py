"""The deletion registry contract: who is forgotten, since when, by which request.

Every backend (embedded SQLite here, Redis in production) implements this
interface and passes the same contract suite in ``tests/``. Readers keep a
version and fetch only the delta since it, never the whole table per refresh.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import Sequence

from beam_rtbf.records import AcceptedRequest, ErasureRequest

__all__ = [
    "DeletionRegistry",
    "RegistryDelta",
    "RequestEvent",
    "RegistryUnavailable",
    "request_to_json",
    "request_from_json",
]


def request_to_json(request: ErasureRequest) -> str:
    """A request as every backend stores it: one JSON object, keys sorted (the stored format: keep it stable)."""
    return json.dumps(
        {
            "request_id": request.request_id,
            "subject_id": request.subject_id,
            "aliases": list(request.aliases),
            "requested_at_ms": request.requested_at_ms,
            "regulation": request.regulation,
            "kind": request.kind,
        },
        sort_keys=True,
    )


def request_from_json(body: str) -> ErasureRequest:
    """The request a backend stored with ``request_to_json``."""
    obj = json.loads(body)
    return ErasureRequest(
        request_id=obj["request_id"],
        subject_id=obj["subject_id"],
        requested_at_ms=obj["requested_at_ms"],
        regulation=obj["regulation"],
        kind=obj["kind"],
        aliases=tuple(obj["aliases"]),
    )


class RegistryUnavailable(RuntimeError):
    """The registry cannot be read or written right now (transient: retry, never pass data)."""


@dataclasses.dataclass(frozen=True)
class RegistryDelta:
    """Subject ids that became forgotten in versions ``(from_version, to_version]``."""

    from_version: int
    to_version: int
    subject_ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RequestEvent:
    """One step of a request's timeline (received, suppressed, purged, verified...)."""

    request_id: str
    status: str
    at_ms: int
    detail: str = ""


class DeletionRegistry(abc.ABC):
    """Durable, idempotent store of erasure requests and the deletion set they imply."""

    @abc.abstractmethod
    def add(self, requests: Sequence[ErasureRequest]) -> list[AcceptedRequest]:
        """Record requests atomically; a request id seen before comes back ``duplicate=True``
        with its original acceptance, and changes nothing."""

    @abc.abstractmethod
    def contains(self, subject_ids: Sequence[str]) -> list[bool]:
        """Membership of many ids in one round trip."""

    @abc.abstractmethod
    def version(self) -> int:
        """The current version; it grows by one per ``add`` that changed the set."""

    @abc.abstractmethod
    def delta_since(self, version: int) -> RegistryDelta:
        """Ids added after ``version``; ``delta_since(0)`` is the full snapshot."""

    def snapshot(self) -> RegistryDelta:
        return self.delta_since(0)

    @abc.abstractmethod
    def get_request(self, request_id: str) -> AcceptedRequest | None:
        """The accepted request with this id, or None."""

    @abc.abstractmethod
    def record_event(self, request_id: str, status: str, at_ms: int, detail: str = "") -> None:
        """Append a step to the request's timeline."""

    def record_events(self, events: Sequence[tuple[str, str, int, str]]) -> None:
        """Append several steps, (request_id, status, at_ms, detail) each, in order; backends
        override it to write them at once (one transaction, one round trip)."""
        for request_id, status, at_ms, detail in events:
            self.record_event(request_id, status, at_ms, detail)

    def record_event_once(self, request_id: str, status: str, at_ms: int, detail: str = "") -> bool:
        """Append the step unless the timeline already has one of this status; True if appended.

        Idempotent, so a retried bundle or a re-run records a step exactly once. Backends
        override it to check and append atomically."""
        if any(event.status == status for event in self.timeline(request_id)):
            return False
        self.record_event(request_id, status, at_ms, detail)
        return True

    def record_events_once(self, events: Sequence[tuple[str, str, int, str]]) -> list[bool]:
        """``record_event_once`` for several steps, (request_id, status, at_ms, detail) each, in
        order; backends override it to check and append them at once (one transaction, one
        round trip): a thousand requests' steps were a thousand commits."""
        return [self.record_event_once(*event) for event in events]

    @abc.abstractmethod
    def timeline(self, request_id: str) -> list[RequestEvent]:
        """The request's steps, oldest first."""

    @abc.abstractmethod
    def requests(self) -> list[AcceptedRequest]:
        """All accepted requests, oldest first."""

    @abc.abstractmethod
    def size(self) -> int:
        """How many ids (subjects and aliases) are forgotten."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> DeletionRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
