"""Erasure sink for downstream systems the pipeline does not own (CRM, e-mail tool, ad platform...).

One HTTPS call per request: ``POST {url}`` with ``{"request_id", "action", "subject_ids"}``,
``Authorization: Bearer $RTBF_ERASURE_API_TOKEN`` and an ``Idempotency-Key`` derived from the
request, the URL and the action, so a retry, a re-run after a crash or a second purge of the same
request never erases twice on an API that honours the header.

Retries: 408/425/429/5xx and connection errors, with full-jitter exponential backoff (AWS
architecture blog's "exponential backoff and jitter") and ``Retry-After`` when the server sends it.
Other 4xx are permanent: no retry, a dead-letter record with the reason. 404/410 mean the system
holds nothing of the subject, which is what erasure wants: done.

Outputs are tagged ``done`` and ``deadletter``; neither holds a subject id nor a credential (the
API's error text is redacted before it is kept: the subject ids, the token wherever it appears and
any ``Authorization``/``Bearer`` value, e.g. from an API that echoes the request headers), only the
request id, the API location, statuses and attempts.
"""

from __future__ import annotations

import email.utils
import hashlib
import ipaddress
import json
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.records import iso_ms, now_ms
from beam_rtbf.redact import mask_secrets, redact_literals

__all__ = [
    "ApiOutcome",
    "CallErasureApi",
    "ErasureApiClient",
    "RateLimiter",
    "check_api_url",
    "idempotency_key",
    "redact_reply",
]

TOKEN_ENV = "RTBF_ERASURE_API_TOKEN"
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
GONE_STATUS = frozenset({404, 410})
_BODY_KEEP = 300


def check_api_url(url: str) -> str:
    """HTTPS only; plain HTTP is allowed to loopback (tests, a sidecar proxy on the same host)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"--erasure_api_url must be an https:// URL, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(f"--erasure_api_url must use https (plain http only to loopback): {url!r}")
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def idempotency_key(request_id: str, url: str, action: str) -> str:
    """Stable per (request, API, action): the API can drop a call it has already carried out."""
    return hashlib.sha256(f"{request_id}\x00{url}\x00{action}".encode()).hexdigest()


class RateLimiter:
    """At most ``rate_per_s`` calls a second from this worker (even spacing, no bursts)."""

    def __init__(self, rate_per_s: float, clock: Callable[[], float] = time.monotonic, sleep=time.sleep) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate must be > 0 calls per second")
        self._interval = 1.0 / rate_per_s
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            wait = self._next - now
            self._next = max(now, self._next) + self._interval
        if wait > 0:
            self._sleep(wait)


@dataclass(frozen=True)
class ApiOutcome:
    request_id: str
    ok: bool
    status: str  # done | not_found | failed
    http_status: int | None
    attempts: int
    reason: str

    def record(self, location: str) -> dict[str, Any]:
        row = {
            "request_id": self.request_id,
            "location": location,
            "status": self.status,
            "http_status": self.http_status,
            "attempts": self.attempts,
            "verified": self.ok,
            "at": iso_ms(now_ms()),
        }
        row["verification" if self.ok else "reason"] = self.reason
        return row


def retry_after_s(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def redact_reply(text: str, subject_ids: Sequence[str], secrets: Sequence[str] = ()) -> str:
    """API text fit to keep: no secret (known values and credential forms), no subject id, short."""
    text = redact_literals(text, secrets)
    for subject in sorted(subject_ids, key=len, reverse=True):
        if subject:
            text = text.replace(subject, "<subject>")
    return text[:_BODY_KEEP]


class ErasureApiClient:
    """Calls the erasure API for one request, retrying what can succeed later."""

    def __init__(
        self,
        url: str,
        action: str = "delete",
        *,
        token: str | None = None,
        rate_per_s: float = 10.0,
        max_attempts: int = 6,
        base_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
        max_retry_after_s: float = 120.0,
        timeout_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        import requests

        self.url = check_api_url(url)
        self.action = action
        token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        if not token:
            raise ValueError(f"the erasure API needs a bearer token: set ${TOKEN_ENV}")
        if max_attempts < 1:
            raise ValueError("--erasure_api_max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.max_retry_after_s = max_retry_after_s
        self.timeout_s = timeout_s
        self._sleep = sleep
        self._rng = rng
        self._limiter = RateLimiter(rate_per_s, sleep=sleep)
        self._requests = requests
        self._session = requests.Session()
        self._secrets = (token, f"Bearer {token}")
        self._session.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        self.retries = 0

    def close(self) -> None:
        self._session.close()

    def backoff_s(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]; Retry-After wins when given."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s)
        return self._rng() * min(self.max_delay_s, self.base_delay_s * (2**attempt))

    def erase(self, request_id: str, subject_ids: Sequence[str]) -> ApiOutcome:
        body = json.dumps({"request_id": request_id, "action": self.action, "subject_ids": list(subject_ids)})
        headers = {"Idempotency-Key": idempotency_key(request_id, self.url, self.action)}
        reason = ""
        http_status: int | None = None
        for attempt in range(1, self.max_attempts + 1):
            self._limiter.acquire()
            retry_after = None
            try:
                response = self._session.post(self.url, data=body, headers=headers, timeout=self.timeout_s)
            except self._requests.RequestException as exc:
                http_status = None
                reason = f"{type(exc).__name__}: {redact_reply(str(exc), subject_ids, self._secrets)}"
            else:
                http_status = response.status_code
                if 200 <= http_status < 300:
                    return ApiOutcome(
                        request_id, True, "done", http_status, attempt, f"API acknowledged with HTTP {http_status}"
                    )
                if http_status in GONE_STATUS:
                    return ApiOutcome(
                        request_id, True, "not_found", http_status, attempt, f"API holds nothing (HTTP {http_status})"
                    )
                reason = f"HTTP {http_status}: {redact_reply(response.text, subject_ids, self._secrets)}"
                if http_status not in RETRYABLE_STATUS:
                    return ApiOutcome(request_id, False, "failed", http_status, attempt, f"permanent: {reason}")
                retry_after = retry_after_s(response.headers.get("Retry-After"))
            if attempt < self.max_attempts:
                self.retries += 1
                self._sleep(self.backoff_s(attempt - 1, retry_after))
        return ApiOutcome(
            request_id,
            False,
            "failed",
            http_status,
            self.max_attempts,
            f"gave up after {self.max_attempts} attempts: {reason}",
        )


class _CallApiFn(beam.DoFn):
    def __init__(self, url: str, action: str, rate_per_s: float, max_attempts: int, client_kwargs: dict) -> None:
        self._url = url
        self._action = action
        self._rate = rate_per_s
        self._attempts = max_attempts
        self._client_kwargs = client_kwargs
        self._location = f"api:{mask_secrets(url)}"  # receipts, audit and dead letters: no credentials
        self._done = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.API_DONE)
        self._failed = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.API_FAILED)
        self._retries = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.API_RETRIES)

    def setup(self) -> None:
        self._client = ErasureApiClient(
            self._url, self._action, rate_per_s=self._rate, max_attempts=self._attempts, **self._client_kwargs
        )

    def teardown(self) -> None:
        self._client.close()

    def process(self, request: dict):
        before = self._client.retries
        outcome = self._client.erase(request["request_id"], request["subject_ids"])
        self._retries.inc(self._client.retries - before)
        if outcome.ok:
            self._done.inc()
            yield outcome.record(self._location)
        else:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput("deadletter", outcome.record(self._location))


class CallErasureApi(beam.PTransform):
    """``{"request_id", "subject_ids"}`` -> tagged ``done`` / ``deadletter`` records, one per request."""

    def __init__(
        self, url: str, action: str = "delete", rate_per_s: float = 10.0, max_attempts: int = 6, **client_kwargs
    ) -> None:
        super().__init__()
        check_api_url(url)
        self._fn = _CallApiFn(url, action, rate_per_s, max_attempts, client_kwargs)

    def expand(self, requests):
        return (
            requests
            | "Spread" >> beam.Reshuffle()
            | "CallApi" >> beam.ParDo(self._fn).with_outputs("deadletter", main="done")
        )
