"""``pubsub://projects/P/subscriptions/S``: Pub/Sub pull, acknowledged only after handover.

    pubsub://projects/acme/subscriptions/rtbf-sessions
    pubsub://projects/acme/subscriptions/rtbf-sessions?topic=sessions   (creates the subscription if missing)

Messages are acknowledged once the runner holds them (at the next poll, and on
close), never on receipt, so a crash redelivers rather than loses; the
pipeline's parse step sees duplicates as at-least-once input. The emulator is
used when ``PUBSUB_EMULATOR_HOST`` is set.
"""

from __future__ import annotations

import time

import apache_beam as beam

from beam_rtbf.records import RawBatch
from beam_rtbf.sources.base import Poller, PollResult, Source
from beam_rtbf.sources.spec import SourceSpec

__all__ = ["PubSubSource", "PubSubPoller", "PubSubWriter", "parse_subscription"]


def parse_subscription(spec: SourceSpec) -> tuple[str, str]:
    parts = spec.location.strip("/").split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] not in ("subscriptions", "topics"):
        raise ValueError(f"{spec.uri!r}: use pubsub://projects/P/subscriptions/S (or .../topics/T to write)")
    return parts[1], parts[3]


class PubSubPoller(Poller):
    def __init__(
        self,
        project: str,
        subscription: str,
        topic: str | None = None,
        max_messages: int = 1000,
        idle_stop_s: float | None = None,
        ack_deadline_s: int = 60,
    ) -> None:
        self.project, self.subscription, self.topic = project, subscription, topic
        self.ack_deadline_s = ack_deadline_s
        self.max_messages = max_messages
        self.idle_stop_s = idle_stop_s
        self._client = None
        self._to_ack: list[str] = []
        self._last_data = time.monotonic()

    @property
    def path(self) -> str:
        return f"projects/{self.project}/subscriptions/{self.subscription}"

    def open(self) -> None:
        from google.api_core import exceptions
        from google.cloud import pubsub_v1

        self._client = pubsub_v1.SubscriberClient()
        try:
            self._client.get_subscription(subscription=self.path, timeout=10)
        except exceptions.NotFound:
            if not self.topic:
                raise ValueError(
                    f"pubsub: subscription {self.path} does not exist (add ?topic=T to create it)"
                ) from None
            try:
                self._client.create_subscription(
                    name=self.path,
                    topic=f"projects/{self.project}/topics/{self.topic}",
                    ack_deadline_seconds=self.ack_deadline_s,
                )
            except exceptions.NotFound as exc:
                raise ValueError(f"pubsub: topic {self.topic} does not exist in {self.project}") from exc
        except exceptions.GoogleAPICallError as exc:
            raise ValueError(f"pubsub: cannot reach {self.path}: {exc}") from exc

    def _ack(self) -> None:
        if self._to_ack:
            self._client.acknowledge(subscription=self.path, ack_ids=self._to_ack, timeout=30)
            self._to_ack = []

    def poll(self) -> PollResult:
        from google.api_core import exceptions

        self._ack()  # the previous poll's messages are with the runner now
        try:
            reply = self._client.pull(subscription=self.path, max_messages=self.max_messages, timeout=5)
        except (exceptions.DeadlineExceeded, exceptions.ServiceUnavailable):
            reply = None
        received = list(reply.received_messages) if reply is not None else []
        now_ms = int(time.time() * 1000)
        elements = []
        if received:
            lines = [m.message.data.replace(b"\r", b" ").replace(b"\n", b" ") for m in received]
            stamps = [int(m.message.publish_time.timestamp() * 1000) for m in received]
            positions = tuple(f"pubsub://{self.path}@{m.message.message_id}" for m in received)
            raw = RawBatch(f"pubsub://{self.path}", "jsonl", b"\n".join(lines) + b"\n", 0, positions, max(stamps))
            elements.append((raw, min(stamps)))
            self._to_ack = [m.ack_id for m in received]
            self._last_data = time.monotonic()
        done = self.idle_stop_s is not None and not received and time.monotonic() - self._last_data >= self.idle_stop_s
        # Publish time is the event-time proxy: an empty pull means caught up to now.
        return PollResult(elements, min((t for _, t in elements), default=now_ms), done=done)

    def close(self) -> None:
        if self._client is not None:
            self._ack()
            self._client.close()
            self._client = None


class PubSubWriter:
    def __init__(self, spec: SourceSpec) -> None:
        from google.cloud import pubsub_v1

        project, name = parse_subscription(spec)
        kind = spec.location.strip("/").split("/")[2]
        topic = name if kind == "topics" else spec.get_str("topic")
        if not topic:
            raise ValueError(f"{spec.uri!r}: writing needs a topic: pubsub://projects/P/topics/T")
        self._publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.05)
        )
        self._topic = f"projects/{project}/topics/{topic}"

    def write(self, records: list[bytes], keys: list[str]) -> int:
        futures = [self._publisher.publish(self._topic, data) for data in records]
        for future in futures:
            future.result(timeout=60)
        return len(records)


class PubSubSource(Source):
    scheme = "pubsub"
    PARAMS = ("topic", "idle_stop_s", "max_messages", "ack_deadline_s")

    def __init__(self, spec: SourceSpec, stream: str) -> None:
        super().__init__(spec, stream)
        project, subscription = parse_subscription(spec)
        self.kwargs = {
            "project": project,
            "subscription": subscription,
            "topic": spec.get_str("topic"),
            "max_messages": spec.get_int("max_messages", 1000),
            "idle_stop_s": spec.get_float("idle_stop_s"),
            "ack_deadline_s": spec.get_int("ack_deadline_s", 60),
        }

    @property
    def bounded(self) -> bool:
        return False

    def read(self) -> beam.PTransform:
        raise ValueError(f"{self.spec.uri} is a stream; it is read in streaming mode")

    def poller(self) -> Poller:
        return PubSubPoller(**self.kwargs)
