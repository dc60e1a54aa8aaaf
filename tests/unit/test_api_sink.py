"""The erasure API client: backoff, Retry-After, rate limit, URL rules (pure logic), then the client
against the local test API over real HTTP (retries, idempotency key, permanent failures, redaction)."""

from __future__ import annotations

import pytest

from beam_rtbf.purge.api_sink import (
    ErasureApiClient,
    RateLimiter,
    check_api_url,
    idempotency_key,
    retry_after_s,
)
from beam_rtbf.testing.erasure_api import ErasureApiServer

TOKEN = "t0ken"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    "url", ["https://api.example.com/erase", "http://127.0.0.1:8080/x", "http://localhost/x", "http://[::1]:9/x"]
)
def test_https_or_loopback_urls_are_accepted(url):
    assert check_api_url(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://api.example.com/erase", "must use https"),
        ("http://10.0.0.5/erase", "must use https"),
        ("ftp://api.example.com/erase", "must be an https:// URL"),
        ("api.example.com/erase", "must be an https:// URL"),
    ],
)
def test_other_urls_are_refused(url, message):
    with pytest.raises(ValueError, match=message):
        check_api_url(url)


def test_idempotency_key_is_stable_per_request_url_and_action():
    key = idempotency_key("req-1", "https://a/x", "delete")
    assert key == idempotency_key("req-1", "https://a/x", "delete") and len(key) == 64
    assert len({key, idempotency_key("req-2", "https://a/x", "delete"), idempotency_key("req-1", "https://b/x", "delete"),
                idempotency_key("req-1", "https://a/x", "anonymize")}) == 4  # fmt: skip


def test_retry_after_accepts_seconds_and_http_dates():
    assert retry_after_s("7") == 7.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:10 GMT", now=lambda: 1445412480.0) == 10.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412490.0) == 0.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None


def test_full_jitter_backoff_grows_exponentially_to_its_cap_and_honours_retry_after():
    client = ErasureApiClient(
        "https://api.example.com/x", token=TOKEN, base_delay_s=0.5, max_delay_s=8, rng=lambda: 1.0
    )
    assert [client.backoff_s(a, None) for a in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    low = ErasureApiClient("https://api.example.com/x", token=TOKEN, rng=lambda: 0.25)
    assert low.backoff_s(2, None) == 0.25 * 2.0  # jitter: uniform share of the exponential ceiling
    assert client.backoff_s(0, 30.0) == 30.0
    assert client.backoff_s(0, 10_000.0) == client.max_retry_after_s


def test_rate_limiter_spaces_calls_evenly():
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        limiter.acquire()
    assert clock.slept == [0.25, 0.25, 0.25, 0.25]
    clock.now += 10  # idle time is not saved up into a burst
    limiter.acquire()
    limiter.acquire()
    assert clock.slept[-1] == 0.25 and len(clock.slept) == 5


def test_client_needs_a_token(monkeypatch):
    monkeypatch.delenv("RTBF_ERASURE_API_TOKEN", raising=False)
    with pytest.raises(ValueError, match="RTBF_ERASURE_API_TOKEN"):
        ErasureApiClient("https://api.example.com/x")


def _client(url: str, clock: FakeClock, **kwargs) -> ErasureApiClient:
    kwargs.setdefault("rate_per_s", 1000.0)
    return ErasureApiClient(url, token=TOKEN, sleep=clock.sleep, rng=lambda: 1.0, **kwargs)


def test_500_then_200_is_retried_with_the_same_idempotency_key():
    clock = FakeClock()
    with ErasureApiServer(TOKEN, {"req-1": [500, 503]}) as api:
        outcome = _client(api.url, clock).erase("req-1", ["alice", "alice@example.com"])
        calls = api.calls
    assert (outcome.ok, outcome.status, outcome.http_status, outcome.attempts) == (True, "done", 200, 3)
    assert [c.status for c in calls] == [500, 503, 200]
    keys = {c.headers["Idempotency-Key"] for c in calls}
    assert keys == {idempotency_key("req-1", api.url, "delete")}
    assert {c.headers["Authorization"] for c in calls} == {f"Bearer {TOKEN}"}
    assert calls[0].body == {"request_id": "req-1", "action": "delete", "subject_ids": ["alice", "alice@example.com"]}
    assert clock.slept == [0.5, 1.0]  # backoff between the three attempts (rng pinned to 1.0)


def test_429_waits_for_retry_after():
    clock = FakeClock()
    with ErasureApiServer(TOKEN, {"req-1": [429, 429]}, retry_after="3") as api:
        outcome = _client(api.url, clock).erase("req-1", ["bob"])
    assert outcome.ok and outcome.attempts == 3
    assert clock.slept == [3.0, 3.0]


def test_permanent_4xx_is_not_retried_and_its_text_keeps_no_subject_id():
    clock = FakeClock()
    with ErasureApiServer("another-token") as api:  # our token is refused: 401
        outcome = _client(api.url, clock).erase("req-1", ["bob@example.com"])
        assert len(api.calls) == 1
    assert (outcome.ok, outcome.status, outcome.http_status, outcome.attempts) == (False, "failed", 401, 1)
    assert outcome.reason.startswith("permanent: HTTP 401") and "bob" not in outcome.reason
    assert clock.slept == []


def test_server_that_keeps_failing_exhausts_the_attempts():
    clock = FakeClock()
    with ErasureApiServer(TOKEN, {"req-1": [502] * 10}) as api:
        outcome = _client(api.url, clock, max_attempts=4).erase("req-1", ["bob"])
        assert len(api.calls) == 4
    assert not outcome.ok and outcome.attempts == 4 and outcome.http_status == 502
    assert outcome.reason.startswith("gave up after 4 attempts: HTTP 502")
    assert len(clock.slept) == 3


def test_404_means_the_system_holds_nothing_which_is_done():
    with ErasureApiServer(TOKEN, {"req-1": [404]}) as api:
        outcome = _client(api.url, FakeClock()).erase("req-1", ["bob"])
    assert (outcome.ok, outcome.status, outcome.http_status) == (True, "not_found", 404)


def test_connection_refused_is_retried_then_dead_lettered_without_the_subject():
    with ErasureApiServer(TOKEN) as api:
        url = api.url  # the server is closed when the block ends: nothing listens there
    clock = FakeClock()
    outcome = _client(url, clock, max_attempts=3, timeout_s=2).erase("req-1", ["carol@example.com"])
    assert not outcome.ok and outcome.http_status is None and outcome.attempts == 3
    assert "ConnectionError" in outcome.reason and "carol" not in outcome.reason


def test_error_text_echoing_the_subject_is_redacted():
    from beam_rtbf.purge.api_sink import redact_reply

    assert (
        redact_reply("no user carol@example.com (carol)", ["carol", "carol@example.com"])
        == "no user <subject> (<subject>)"
    )


def test_a_second_call_with_the_same_key_erases_once():
    with ErasureApiServer(TOKEN) as api:
        client = _client(api.url, FakeClock())
        assert client.erase("req-1", ["bob"]).ok and client.erase("req-1", ["bob"]).ok
        assert len(api.calls) == 2 and len(api.erased) == 1


def test_error_text_echoing_the_token_or_any_credential_is_redacted():
    from beam_rtbf.purge.api_sink import redact_reply

    text = '{"headers": {"Authorization": "Bearer tok-123"}, "seen": "tok-123", "other": "Bearer abc.def"}'
    assert redact_reply(text, [], ["tok-123", "Bearer tok-123"]) == (
        '{"headers": {"Authorization": "***"}, "seen": "***", "other": "Bearer ***"}'
    )
