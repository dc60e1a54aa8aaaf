"""The deletion-registry contract, run against every backend: embedded SQLite and a real Redis."""

from __future__ import annotations

import pytest

from beam_rtbf.records import ErasureRequest
from beam_rtbf.registry import RegistryUnavailable, open_registry
from beam_rtbf.testing.redis_server import RedisServer


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.integration)])
def backend(request, tmp_path):
    """(url, restart): a registry URL and a function that restarts its store (a crash for Redis)."""
    if request.param == "embedded":
        yield f"embedded://{tmp_path / 'registry.sqlite'}", lambda: None
        return
    server = RedisServer(str(tmp_path / "redis"))
    server.start()

    def crash_and_restart() -> None:
        server.stop(kill=True)
        server.start()

    yield server.url, crash_and_restart
    server.stop()


def _request(request_id: str, subject: str, *aliases: str, at: int = 1_000) -> ErasureRequest:
    return ErasureRequest(request_id, subject, at, aliases=aliases)


def test_add_is_idempotent_and_versions_grow_per_changing_add(backend):
    url, _ = backend
    with open_registry(url) as registry:
        assert registry.version() == 0 and registry.size() == 0
        first = registry.add([_request("r1", "alice", "alice@example.com"), _request("r2", "bob")])
        assert [(a.request.request_id, a.version, a.duplicate) for a in first] == [("r1", 1, False), ("r2", 1, False)]
        again = registry.add([_request("r1", "alice"), _request("r1", "alice")])
        assert [(a.version, a.duplicate, a.accepted_at_ms) for a in again] == [(1, True, first[0].accepted_at_ms)] * 2
        assert again[0].request.aliases == ("alice@example.com",)  # the original, not the re-sent body
        assert registry.version() == 1
        mixed = registry.add([_request("r3", "carol"), _request("r3", "carol"), _request("r2", "bob")])
        assert [(a.version, a.duplicate) for a in mixed] == [(2, False), (2, True), (1, True)]
        assert registry.version() == 2 and registry.size() == 4
        assert registry.add([]) == []


def test_membership_deltas_and_snapshot(backend):
    url, _ = backend
    with open_registry(url) as registry:
        registry.add([_request("r1", "alice", "a@x")])
        registry.add([_request("r2", "bob")])
        registry.add([_request("r3", "carol"), _request("r4", "dave")])
        assert registry.contains(["alice", "a@x", "bob", "zed", "carol", "dave", ""]) == [
            True,
            True,
            True,
            False,
            True,
            True,
            False,
        ]
        assert sorted(registry.delta_since(0).subject_ids) == ["a@x", "alice", "bob", "carol", "dave"]
        delta = registry.delta_since(1)
        assert (delta.from_version, delta.to_version, sorted(delta.subject_ids)) == (1, 3, ["bob", "carol", "dave"])
        assert registry.delta_since(3).subject_ids == ()
        snapshot = registry.snapshot()
        assert snapshot.to_version == 3 and len(snapshot.subject_ids) == 5
        many = [f"u{i}" for i in range(25_000)]
        assert registry.contains(many) == [False] * 25_000  # crosses the 10K-per-call batching


def test_requests_and_timeline(backend):
    url, _ = backend
    with open_registry(url) as registry:
        registry.add([_request("r1", "alice"), _request("r2", "bob")])
        assert registry.get_request("nope") is None
        got = registry.get_request("r2")
        assert got.request.subject_id == "bob" and got.version == 1
        assert [a.request.request_id for a in registry.requests()] == ["r1", "r2"]
        registry.record_event("r1", "suppressed", 2_000, "all shards")
        registry.record_event("r1", "purged", 3_000)
        timeline = registry.timeline("r1")
        assert [(e.status, e.detail) for e in timeline] == [
            ("received", ""),
            ("suppressed", "all shards"),
            ("purged", ""),
        ]
        assert timeline[1].at_ms == 2_000
        assert registry.timeline("nope") == []


def test_several_steps_recorded_at_once_are_appended_in_order(backend):
    url, _ = backend
    with open_registry(url) as registry:
        registry.add([_request("r1", "alice"), _request("r2", "bob")])
        registry.record_events(
            [("r1", "purged", 7, "28 files"), ("r2", "purged", 8, ""), ("r1", "verified", 9, "receipt")]
        )
        registry.record_events([])
        assert [(e.status, e.at_ms, e.detail) for e in registry.timeline("r1")[1:]] == [
            ("purged", 7, "28 files"),
            ("verified", 9, "receipt"),
        ]
        assert [(e.status, e.at_ms) for e in registry.timeline("r2")[1:]] == [("purged", 8)]


def test_a_step_recorded_once_is_appended_exactly_once(backend):
    url, _ = backend
    with open_registry(url) as registry:
        registry.add([_request("r1", "alice")])
        assert registry.record_event_once("r1", "suppressed", 5, "filter drops the subject") is True
        assert registry.record_event_once("r1", "suppressed", 9, "again") is False
        registry.record_event("r1", "purged", 10)
        assert registry.record_event_once("r1", "purged", 11) is False
        assert [(e.status, e.at_ms, e.detail) for e in registry.timeline("r1")] == [
            ("received", registry.get_request("r1").accepted_at_ms, ""),
            ("suppressed", 5, "filter drops the subject"),
            ("purged", 10, ""),
        ]


def test_steps_recorded_once_in_one_call_are_each_appended_exactly_once(backend):
    """The batch form (one transaction / one round trip): a step already there, or twice in the
    batch, is appended once; the answers say which were."""
    url, _ = backend
    with open_registry(url) as registry:
        registry.add([_request("r1", "alice"), _request("r2", "bob")])
        assert registry.record_events_once([("r1", "suppressed", 5, "a")]) == [True]
        got = registry.record_events_once(
            [
                ("r1", "suppressed", 6, "b"),
                ("r2", "suppressed", 7, "c"),
                ("r2", "suppressed", 8, "d"),
                ("r2", "purged", 9, ""),
            ]
        )
        assert got == [False, True, False, True]
        assert registry.record_events_once([]) == []
        assert [(e.status, e.at_ms, e.detail) for e in registry.timeline("r1")[1:]] == [("suppressed", 5, "a")]
        assert [(e.status, e.at_ms, e.detail) for e in registry.timeline("r2")[1:]] == [
            ("suppressed", 7, "c"),
            ("purged", 9, ""),
        ]


def test_accepted_requests_survive_a_restart(backend):
    url, restart = backend
    with open_registry(url) as registry:
        accepted = registry.add([_request("r1", "alice"), _request("r2", "bob", "b@x")])
    restart()  # Redis: SIGKILL then start again on the same data dir (AOF, fsync always)
    with open_registry(url) as registry:
        assert registry.version() == 1
        assert sorted(registry.snapshot().subject_ids) == ["alice", "b@x", "bob"]
        assert [a.accepted_at_ms for a in registry.requests()] == [a.accepted_at_ms for a in accepted]
        assert registry.add([_request("r1", "alice")])[0].duplicate is True


def test_unsupported_urls_are_clear_errors():
    with pytest.raises(ValueError, match="unsupported registry URL 'mongodb://x'"):
        open_registry("mongodb://x")
    with pytest.raises(ValueError, match="needs a path"):
        open_registry("embedded://")
    with pytest.raises(ValueError, match="RTBF_REDIS_PASSWORD"):
        open_registry("redis://:secret@127.0.0.1:6379/0")


@pytest.mark.integration
def test_unreachable_redis_is_registry_unavailable():
    from beam_rtbf.testing.redis_server import free_port

    with pytest.raises(RegistryUnavailable, match=r"Redis at redis://127.0.0.1:\d+/0 unreachable"):
        open_registry(f"redis://127.0.0.1:{free_port()}/0")


@pytest.mark.integration
def test_wrong_or_missing_password_is_one_clear_error(tmp_path, monkeypatch):
    server = RedisServer(str(tmp_path / "redis"), password="s3cret-pass")
    server.start()
    try:
        monkeypatch.delenv("RTBF_REDIS_PASSWORD", raising=False)
        with pytest.raises(RegistryUnavailable, match="needs a password.*RTBF_REDIS_PASSWORD"):
            open_registry(server.url)
        monkeypatch.setenv("RTBF_REDIS_PASSWORD", "wrong")
        with pytest.raises(RegistryUnavailable, match="refused the credentials.*RTBF_REDIS_PASSWORD"):
            open_registry(server.url)
        monkeypatch.setenv("RTBF_REDIS_PASSWORD", "s3cret-pass")
        with open_registry(server.url) as registry:
            assert registry.version() == 0
    finally:
        server.stop()
