"""``kafka://BROKERS/TOPIC?group=...``: a Kafka reader on confluent-kafka (librdkafka).

    kafka://b1:9092,b2:9092/sessions?group=rtbf
    kafka://b1:9092/events?group=rtbf&start=timestamp&at=2026-01-01T00:00:00Z
    kafka://b1:9093/sessions?group=rtbf&kafka.security.protocol=SASL_SSL&kafka.sasl.mechanism=SCRAM-SHA-512
        &kafka.sasl.username=rtbf                 (password from $RTBF_KAFKA_SASL_PASSWORD)

- partitions are assigned explicitly (one position per partition, like a
  splittable DoFn's restriction); new partitions are discovered every
  ``discovery_interval_s`` and read from the beginning;
- a partition starts at the group's committed offset, else at ``start``
  (earliest, latest, or the first offset at ``at`` for ``start=timestamp``);
- offsets are committed to the group once the runner holds the records (as of
  the previous poll, asynchronously; on close, waited for up to
  ``commit_timeout_s``), so a restart re-reads nothing committed; a commit that
  fails (the coordinator is away) is logged and superseded by the next one: the
  group's offsets may lag, so a restart of the reader may re-read records
  (at-least-once), while the reader itself goes on from its own positions;
- while the brokers are away the reader keeps polling (librdkafka reconnects)
  and resumes where it stood; only the first connection's failure is an error
  (unreachable brokers, a missing topic, failed authentication);
- the watermark is the oldest last-seen record timestamp over partitions with
  unread data; partitions that are caught up do not hold it back;
- ``kafka.*`` parameters pass through to librdkafka (TLS, SASL); secrets come
  from the environment, never the URI.

On portable runners each partition is a restriction of its own (``KafkaPartitions``:
discovery emits each partition once, a partition added while running is read from its
beginning; the reader of a partition commits that partition's offsets only).

On Flink, Beam's cross-language ``ReadFromKafka`` is the alternative (it needs
the Java expansion service jar); see the README.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import apache_beam as beam

from beam_rtbf.records import RawBatch, parse_time_ms
from beam_rtbf.sources.base import Poller, PollResult, Source
from beam_rtbf.sources.poller import ShardedPollers, ShardInfo
from beam_rtbf.sources.polling import ReadPacing
from beam_rtbf.sources.spec import SourceSpec

__all__ = ["KafkaSource", "KafkaPoller", "KafkaPartitions", "KafkaWriter"]

_LOGGER = logging.getLogger(__name__)
_LIBRDKAFKA_LOGGER = logging.getLogger(__name__ + ".librdkafka")
_STARTS = ("earliest", "latest", "timestamp")
SASL_PASSWORD_ENV = "RTBF_KAFKA_SASL_PASSWORD"
_COMMIT_TIMEOUT_S = 10.0


def _client_config(bootstrap: str, extra: dict[str, str], errors: list | None = None) -> dict[str, Any]:
    # librdkafka's own log lines (one per reconnect attempt) go through Python logging, not raw stderr
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "log_level": 3, "logger": _LIBRDKAFKA_LOGGER}
    if errors is not None:
        config["error_cb"] = errors.append  # client-level errors (transport, authentication), read by the caller
    config.update(extra)
    if "sasl.password" in config:
        raise ValueError(f"put the SASL password in ${SASL_PASSWORD_ENV}, not in the URI")
    if os.environ.get(SASL_PASSWORD_ENV):
        config["sasl.password"] = os.environ[SASL_PASSWORD_ENV]
    return config


class KafkaPoller(Poller):
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        start: str = "earliest",
        at_ms: int | None = None,
        extra: dict[str, str] | None = None,
        discovery_interval_s: float = 10.0,
        max_records: int = 50_000,
        idle_stop_s: float | None = None,
        metadata_timeout_s: float = 10.0,
        partitions: list[int] | None = None,
        added: bool = False,
    ) -> None:
        """``partitions``: read only these (one restriction's share); ``added``: they appeared
        while the read was running, so all of each is read whatever ``start`` says."""
        if start not in _STARTS:
            raise ValueError(f"kafka start must be one of {_STARTS}, not {start!r}")
        if start == "timestamp" and at_ms is None:
            raise ValueError("kafka start=timestamp needs at=<RFC 3339 time>")
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.start, self.at_ms = start, at_ms
        self.extra = dict(extra or {})
        self.discovery_interval_s = discovery_interval_s
        self.max_records = max_records
        self.idle_stop_s = idle_stop_s
        self.metadata_timeout_s = metadata_timeout_s
        self._consumer = None
        self._partitions: set[int] = set()
        self._next: dict[int, int] = {}  # partition -> next offset to read
        self._last_ts: dict[int, int] = {}
        self._to_commit: dict[int, int] | None = None
        self._discovered_at = 0.0
        self._last_data = time.monotonic()
        self._restored: dict[int, int] = {}
        self._client_errors: list = []
        self._commits_pending = 0
        self.only = None if partitions is None else frozenset(partitions)
        self.added = added

    def open(self) -> None:
        from confluent_kafka import Consumer

        config = _client_config(self.bootstrap, self.extra, self._client_errors)
        config.update(
            {
                "group.id": self.group,
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "allow.auto.create.topics": False,
                "auto.offset.reset": "earliest",
                "on_commit": self._committed,
            }
        )
        self._consumer = Consumer(config)
        try:
            self._discover()
        except BaseException:
            self._consumer.close()
            self._consumer = None
            raise

    def close(self, commit_timeout_s: float = _COMMIT_TIMEOUT_S) -> None:
        if self._consumer is not None:
            self._commit(self._positions())
            deadline = time.monotonic() + commit_timeout_s
            while self._commits_pending and time.monotonic() < deadline:
                self._consumer.poll(0.1)  # serves the commit's callback (a record it returns is not ours any more)
            if self._commits_pending:
                _LOGGER.warning(
                    "kafka %s: the last offsets were not committed within %.0f s", self.topic, commit_timeout_s
                )
            self._consumer.close()
            self._consumer = None

    def _committed(self, error, partitions) -> None:
        self._commits_pending -= 1
        if error is not None:
            _LOGGER.warning("kafka %s: offsets not committed (%s); the next commit supersedes them", self.topic, error)

    def check(self) -> None:
        self.open()
        self._consumer.close()  # without committing: a check must not move the group
        self._consumer = None

    def _metadata(self):
        """The topic's metadata; fails at once (not at the timeout) when the brokers refuse our credentials."""
        from confluent_kafka import KafkaError, KafkaException

        deadline = time.monotonic() + self.metadata_timeout_s
        while True:
            try:
                return self._consumer.list_topics(self.topic, timeout=min(0.5, max(0.05, deadline - time.monotonic())))
            except KafkaException as exc:
                if not self._partitions:
                    self._consumer.poll(0)  # serves error_cb (nothing is assigned yet: no record to lose)
                refused = [e for e in self._client_errors if e.code() == KafkaError._AUTHENTICATION]
                if refused:
                    raise ValueError(
                        f"kafka://{self.bootstrap}/{self.topic}: authentication failed ({refused[0].str()})"
                    ) from None
                if time.monotonic() >= deadline:
                    raise ValueError(
                        f"kafka://{self.bootstrap}/{self.topic}: cannot reach the brokers ({exc})"
                    ) from exc

    def _discover(self) -> None:
        from confluent_kafka import TopicPartition

        metadata = self._metadata()
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise ValueError(f"kafka://{self.bootstrap}/{self.topic}: topic unavailable ({topic and topic.error})")
        listed = set(topic.partitions) if self.only is None else set(topic.partitions) & self.only
        new = sorted(listed - self._partitions)
        if new:
            committed = self._group_offsets([TopicPartition(self.topic, p) for p in new])
            for tp in committed:
                if tp.partition in self._restored:  # a restriction's position wins over the group's commit
                    self._next[tp.partition] = self._restored[tp.partition]
                else:
                    self._next[tp.partition] = tp.offset if tp.offset >= 0 else self._start_offset(tp.partition)
            self._partitions.update(new)
            self._consumer.assign([TopicPartition(self.topic, p, self._next[p]) for p in sorted(self._partitions)])
            if self._discovered_at:
                _LOGGER.info("kafka %s: new partitions %s", self.topic, new)
        self._discovered_at = time.monotonic()

    def _start_offset(self, partition: int) -> int:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        if self._discovered_at or self.added:
            return OFFSET_BEGINNING  # a partition added while running: all of it
        low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=10)
        if self.start == "earliest":
            return low
        if self.start == "latest":
            return high
        found = self._consumer.offsets_for_times([TopicPartition(self.topic, partition, self.at_ms)], timeout=10)
        return found[0].offset if found[0].offset >= 0 else high

    def _group_offsets(self, partitions: list, patience_s: float = 30.0) -> list:
        """The group's committed offsets; a coordinator still loading or just moved is waited for."""
        from confluent_kafka import KafkaError, KafkaException

        # The group coordinator is moving or still loading the offsets topic (a new broker's first
        # group creates it): librdkafka does not mark all of these retriable.
        waitable = {
            KafkaError.NOT_COORDINATOR,
            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
            KafkaError._TIMED_OUT,
        }
        deadline = time.monotonic() + patience_s
        delay = 0.1
        while True:
            try:
                return self._consumer.committed(partitions, timeout=10)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                retriable = (
                    getattr(error, "retriable", lambda: False)() or getattr(error, "code", lambda: None)() in waitable
                )
                if not retriable or time.monotonic() + delay > deadline:
                    raise
                _LOGGER.info("kafka %s: committed offsets not available yet (%s); retrying", self.topic, error)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _positions(self) -> dict[int, int]:
        return {p: o for p, o in self._next.items() if o >= 0}

    def _commit(self, offsets: dict[int, int]) -> None:
        """Commit without waiting: a synchronous commit blocks for ~45 s while the coordinator is away."""
        from confluent_kafka import TopicPartition

        if offsets:
            self._consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()], asynchronous=True
            )
            self._commits_pending += 1

    def poll(self) -> PollResult:
        from confluent_kafka import KafkaError

        if self._to_commit is not None:
            self._commit(self._to_commit)  # the previous poll's records are with the runner now
            self._to_commit = None
        if time.monotonic() - self._discovered_at >= self.discovery_interval_s:
            try:
                self._discover()
            except ValueError as exc:  # the brokers are away for now: keep reading what is assigned
                _LOGGER.warning("kafka %s: partition discovery failed (%s); retrying later", self.topic, exc)
                self._discovered_at = time.monotonic()
        messages = self._consumer.consume(num_messages=self.max_records, timeout=0.2)
        by_partition: dict[int, list] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.retriable():
                    _LOGGER.warning("kafka %s: %s (retrying)", self.topic, error)
                    continue
                raise ValueError(f"kafka://{self.bootstrap}/{self.topic}: {error}")
            by_partition.setdefault(message.partition(), []).append(message)
        elements = []
        for partition, batch in sorted(by_partition.items()):
            lines = [(m.value() or b"").replace(b"\r", b" ").replace(b"\n", b" ") for m in batch]
            stamps = [m.timestamp()[1] if m.timestamp()[1] > 0 else int(time.time() * 1000) for m in batch]
            positions = tuple(f"kafka://{self.topic}/{partition}@{m.offset()}" for m in batch)
            raw = RawBatch(
                f"kafka://{self.topic}/{partition}", "jsonl", b"\n".join(lines) + b"\n", 0, positions, max(stamps)
            )
            elements.append((raw, min(stamps)))
            self._next[partition] = batch[-1].offset() + 1
            self._last_ts[partition] = max(stamps)
        self._to_commit = self._positions()
        if elements:
            self._last_data = time.monotonic()
        done = self.idle_stop_s is not None and not elements and time.monotonic() - self._last_data >= self.idle_stop_s
        return PollResult(elements, self._watermark(bool(elements)), done=done)

    def _watermark(self, got_data: bool) -> int:
        now = int(time.time() * 1000)
        if not got_data:
            return now  # caught up everywhere: idle partitions advance the watermark
        return min(self._last_ts.values(), default=now)

    @property
    def positions(self) -> dict[int, int]:
        return dict(self._positions())

    def checkpoint(self) -> dict:
        return {"offsets": {str(p): o for p, o in self._positions().items()}}

    def restore(self, state: dict) -> None:
        self._restored = {int(p): int(o) for p, o in state.get("offsets", {}).items()}


class KafkaPartitions(ShardedPollers):
    """The topic's partitions as units of work: each a root, read by ``KafkaPoller(partitions=[p])``."""

    def __init__(self, kwargs: dict) -> None:
        self.kwargs = dict(kwargs)
        self.discovery_interval_s = kwargs.get("discovery_interval_s", 10.0)
        self.idle_stop_s = kwargs.get("idle_stop_s")
        self._admin = None

    def discover(self) -> list[ShardInfo]:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        bootstrap, topic = self.kwargs["bootstrap"], self.kwargs["topic"]
        if self._admin is None:
            self._admin = AdminClient(_client_config(bootstrap, self.kwargs.get("extra") or {}))
        try:
            metadata = self._admin.list_topics(topic, timeout=self.kwargs.get("metadata_timeout_s", 10.0))
        except KafkaException as exc:
            raise ValueError(f"kafka://{bootstrap}/{topic}: cannot reach the brokers ({exc})") from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise ValueError(f"kafka://{bootstrap}/{topic}: topic unavailable ({found and found.error})")
        return [ShardInfo(str(p)) for p in sorted(found.partitions)]

    def poller_for(self, roots: list[str], added: bool = False) -> KafkaPoller:
        return KafkaPoller(**self.kwargs, partitions=[int(r) for r in roots], added=added)

    def close(self) -> None:
        self._admin = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_admin": None}


class KafkaWriter:
    """Produces records with librdkafka's batching; raises if any delivery failed."""

    def __init__(self, bootstrap: str, topic: str, extra: dict[str, str] | None = None) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self._client_errors: list = []
        config = _client_config(bootstrap, dict(extra or {}), self._client_errors)
        config.update({"linger.ms": 20, "enable.idempotence": True})
        self._producer = Producer(config)
        self._failed: list[str] = []

    def write(self, records: list[bytes], keys: list[str]) -> int:
        from confluent_kafka import KafkaError

        def delivered(error, _message) -> None:
            if error is not None:
                self._failed.append(str(error))

        for value, key in zip(records, keys):
            while True:
                try:
                    self._producer.produce(self.topic, value=value, key=key, on_delivery=delivered)
                    break
                except BufferError:
                    self._producer.poll(0.1)  # local queue full: let deliveries drain
            self._producer.poll(0)
        deadline = time.monotonic() + 30
        undelivered = self._producer.flush(0.5)
        while undelivered and time.monotonic() < deadline:
            refused = [e for e in self._client_errors if e.code() == KafkaError._AUTHENTICATION]
            if refused:
                raise RuntimeError(f"kafka: authentication failed ({refused[0].str()})")
            undelivered = self._producer.flush(0.5)
        if self._failed:
            raise RuntimeError(f"kafka: {len(self._failed)} records not delivered: {self._failed[0]}")
        if undelivered:
            raise RuntimeError(f"kafka: {undelivered} records not delivered within 30 s")
        return len(records)


def parse_kafka_uri(spec: SourceSpec) -> tuple[str, str]:
    bootstrap, _, topic = spec.location.partition("/")
    if not bootstrap or not topic.strip("/"):
        raise ValueError(f"source {spec.uri!r}: use kafka://BROKER[,BROKER]/TOPIC?group=...")
    return bootstrap, topic.strip("/")


class KafkaSource(Source):
    scheme = "kafka"
    PARAMS = (
        "group",
        "start",
        "at",
        "idle_stop_s",
        "max_records",
        "discovery_interval_s",
        "metadata_timeout_s",
        "impl",
        "expansion_service",
    )
    PARAM_PREFIXES = ("kafka.",)  # librdkafka options, passed through

    def __init__(self, spec: SourceSpec, stream: str) -> None:
        super().__init__(spec, stream)
        bootstrap, topic = parse_kafka_uri(spec)
        at = spec.get_str("at")
        self.kwargs = {
            "bootstrap": bootstrap,
            "topic": topic,
            "group": spec.get_str("group", f"beam-rtbf-{stream}"),
            "start": spec.get_str("start", "earliest").lower(),
            "at_ms": parse_time_ms(at) if at else None,
            "extra": {k[len("kafka.") :]: v for k, v in spec.params.items() if k.startswith("kafka.")},
            "discovery_interval_s": spec.get_float("discovery_interval_s", 10.0),
            "max_records": spec.get_int("max_records", 50_000),
            "idle_stop_s": spec.get_float("idle_stop_s"),
            "metadata_timeout_s": spec.get_float("metadata_timeout_s", 10.0),
        }
        KafkaPoller(**self.kwargs)  # validates now
        self.impl = spec.get_str("impl", "native")
        if self.impl not in ("native", "xlang"):
            raise ValueError(f"{spec.uri!r}: impl must be native (beam-rtbf's reader) or xlang (Beam's ReadFromKafka)")
        self.expansion_service = spec.get_str("expansion_service")

    @property
    def bounded(self) -> bool:
        return False

    def read(self) -> beam.PTransform:
        raise ValueError(f"{self.spec.uri} is a stream; it is read in streaming mode")

    def poller(self) -> Poller:
        return KafkaPoller(**self.kwargs)

    def shards(self) -> KafkaPartitions:
        return KafkaPartitions(self.kwargs)

    def streaming_read(self, read_trace: str | None = None, pacing: ReadPacing = ReadPacing()) -> beam.PTransform:
        if self.impl == "native":
            return super().streaming_read(read_trace, pacing)
        return ReadFromKafkaCrossLanguage(self.kwargs, self.expansion_service)


class ReadFromKafkaCrossLanguage(beam.PTransform):
    """Beam's Java ``ReadFromKafka`` (Flink/Dataflow with an expansion service), as RawBatch elements.

    Needs ``expansion_service=host:port`` of a running Beam Java IO expansion
    service, or Beam's auto-started one (it downloads the expansion-service jar,
    which this workplace cannot).
    """

    def __init__(self, kwargs: dict, expansion_service: str | None) -> None:
        super().__init__()
        self._kwargs = kwargs
        self._expansion_service = expansion_service

    def expand(self, pbegin):
        from apache_beam.io.kafka import ReadFromKafka

        config = {
            "bootstrap.servers": self._kwargs["bootstrap"],
            "group.id": self._kwargs["group"],
            "auto.offset.reset": "latest" if self._kwargs["start"] == "latest" else "earliest",
            **self._kwargs["extra"],
        }
        read_kwargs = {
            "consumer_config": config,
            "topics": [self._kwargs["topic"]],
            "with_metadata": False,
            "commit_offset_in_finalize": True,
        }
        if self._expansion_service:
            read_kwargs["expansion_service"] = self._expansion_service
        topic = self._kwargs["topic"]
        return (
            pbegin
            | "ReadFromKafkaJava" >> ReadFromKafka(**read_kwargs)
            | "AsRawBatches"
            >> beam.Map(lambda kv: RawBatch(f"kafka://{topic}", "jsonl", (kv[1] or b"").replace(b"\n", b" ") + b"\n"))
        )
