"""Pub/Sub source against the Google Cloud CLI's emulator: ack after handover, redelivery on a crash."""

from __future__ import annotations

import json
import time

import pytest

from beam_rtbf.sources.pubsub import PubSubPoller
from beam_rtbf.sources.spec import parse_source_uri
from beam_rtbf.testing.pubsub_emulator import PubSubEmulator

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    server = PubSubEmulator(str(tmp_path_factory.mktemp("pubsub")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def topic(emulator, monkeypatch):
    from google.cloud import pubsub_v1

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    name = f"t{time.monotonic_ns()}"
    pubsub_v1.PublisherClient().create_topic(name=f"projects/rtbf/topics/{name}")
    return name


def _publish(topic: str, start: int, count: int) -> None:
    from beam_rtbf.sources.pubsub import PubSubWriter

    writer = PubSubWriter(parse_source_uri(f"pubsub://projects/rtbf/topics/{topic}"))
    records = [json.dumps({"user_id": "u", "event_id": f"e{i}"}).encode() for i in range(start, start + count)]
    assert writer.write(records, [""] * count) == count


def _drain(poller: PubSubPoller, want: int, timeout_s: float = 20.0) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(seen) < want and time.monotonic() < deadline:
        for raw, _ in poller.poll().elements:
            seen += [json.loads(line)["event_id"] for line in raw.data.splitlines()]
    return seen


def test_reads_everything_and_acks_after_handover(topic):
    first = PubSubPoller("rtbf", f"{topic}-sub", topic=topic, max_messages=50)
    first.open()
    _publish(topic, 0, 120)
    assert sorted(_drain(first, 120)) == sorted(f"e{i}" for i in range(120))
    first.poll()  # acknowledges what the previous poll handed over
    first.close()
    again = PubSubPoller("rtbf", f"{topic}-sub")
    again.open()
    assert _drain(again, 1, timeout_s=3.0) == []  # nothing acknowledged comes back
    again.close()


def test_a_crash_before_handover_redelivers(topic):
    crashed = PubSubPoller("rtbf", f"{topic}-sub", topic=topic, max_messages=100, ack_deadline_s=10)
    crashed.open()
    _publish(topic, 0, 30)
    polls: list[list[str]] = []
    deadline = time.monotonic() + 20
    while sum(map(len, polls)) < 30 and time.monotonic() < deadline:
        got = [json.loads(line)["event_id"] for raw, _ in crashed.poll().elements for line in raw.data.splitlines()]
        if got:
            polls.append(got)
    assert sorted(e for p in polls for e in p) == sorted(f"e{i}" for i in range(30))
    crashed._client.close()  # a crash: the last poll was handed over but never acknowledged
    recovered = PubSubPoller("rtbf", f"{topic}-sub")
    recovered.open()
    redelivered = _drain(recovered, len(polls[-1]), timeout_s=40.0)  # after the 10 s ack deadline
    assert sorted(set(redelivered)) == sorted(polls[-1])
    recovered.poll()
    recovered.close()


def test_missing_subscription_is_a_clear_error(topic):
    with pytest.raises(ValueError, match="subscription projects/rtbf/subscriptions/none does not exist"):
        PubSubPoller("rtbf", "none").open()
