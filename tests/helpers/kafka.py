"""Writing and draining Kafka topics in the Kafka tests (mock cluster and real broker alike)."""

from __future__ import annotations

import json
import time

from beam_rtbf.sources.kafka import KafkaPoller, KafkaWriter
from tests.helpers.data import T0


def event(i: int) -> bytes:
    return json.dumps({"user_id": f"u{i % 40}", "event_id": f"e{i}", "event_time": T0 + i}).encode()


def write_events(bootstrap: str, topic: str, start: int, count: int, extra: dict[str, str] | None = None) -> None:
    """Events ``e{start}``..``e{start+count-1}`` (user ``u{i % 40}``), keyed ``k{i}``."""
    records = [event(i) for i in range(start, start + count)]
    keys = [f"k{i}" for i in range(start, start + count)]
    assert KafkaWriter(bootstrap, topic, extra).write(records, keys) == count


def drain(poller: KafkaPoller, want: int, timeout_s: float = 15.0) -> list[tuple[int, str]]:
    """(partition, event_id) of what ``poller`` returns until ``want`` records or the timeout."""
    seen: list[tuple[int, str]] = []
    deadline = time.monotonic() + timeout_s
    while len(seen) < want and time.monotonic() < deadline:
        for raw, _ in poller.poll().elements:
            partition = int(raw.source.rsplit("/", 1)[1])
            seen += [(partition, json.loads(line)["event_id"]) for line in raw.data.splitlines()]
    return seen


def ids(start: int, stop: int) -> list[str]:
    return sorted(f"e{i}" for i in range(start, stop))
