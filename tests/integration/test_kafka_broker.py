"""Kafka source against a real Apache Kafka broker (KRaft, one node, loopback): what the mock cluster cannot do.

The tests of ``test_kafka.py`` run on this broker too (its ``kafka`` fixture has
a "broker" parameter); here: start=timestamp, partitions added while running,
two readers in one group, a broker restart mid-stream, SASL/SCRAM-SHA-256 with
the password from the environment, and an end-to-end run with sessions and
requests from Kafka topics.
"""

from __future__ import annotations

import json
import secrets
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from beam_rtbf.pipeline import run
from beam_rtbf.records import iso_ms
from beam_rtbf.sources.kafka import SASL_PASSWORD_ENV, KafkaPoller, KafkaSource
from beam_rtbf.sources.spec import parse_source_uri
from beam_rtbf.testing.kafka_broker import KafkaBroker
from tests.helpers.data import T0, archive_rows
from tests.helpers.kafka import drain, event, ids, write_events

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

SCRAM_USER = "rtbf-reader"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """One broker for the module, with a SASL_PLAINTEXT listener for ``SCRAM_USER`` (a fresh random password)."""
    server = KafkaBroker(str(tmp_path_factory.mktemp("kafka-broker")), scram_users={SCRAM_USER: secrets.token_hex(12)})
    server.start()
    yield server
    server.stop()


def _admin(broker: KafkaBroker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 0})


def _create_topic(broker: KafkaBroker, topic: str, partitions: int) -> None:
    admin = _admin(broker)  # held until the future is done: a destroyed client fails it
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=30)
    _wait_partitions(broker, topic, partitions)


def _wait_partitions(broker: KafkaBroker, topic: str, partitions: int) -> None:
    """Until the broker's metadata shows ``partitions`` (a producer made later then sees them all)."""
    admin = _admin(broker)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = admin.list_topics(topic, timeout=10).topics.get(topic)
        if found is not None and found.error is None and len(found.partitions) == partitions:
            return
        time.sleep(0.1)
    raise AssertionError(f"{topic} never showed {partitions} partitions")


def _sasl_uri(broker: KafkaBroker, topic: str, group: str) -> str:
    return (
        f"kafka://{broker.sasl_bootstrap}/{topic}?group={group}&metadata_timeout_s=10"
        f"&kafka.security.protocol=SASL_PLAINTEXT&kafka.sasl.mechanism=SCRAM-SHA-256&kafka.sasl.username={SCRAM_USER}"
    )


def test_the_broker_listens_on_loopback_only(broker):
    import subprocess

    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout.splitlines()
    ours = [line for line in listening if f"pid={broker.process.pid}," in line]
    local = sorted(line.split()[3] for line in ours)
    assert local == sorted(f"127.0.0.1:{port}" for port in (broker.port, broker.controller_port, broker.sasl_port)), (
        ours
    )
    assert broker.started_in_s is not None and broker.started_in_s < 60


def test_start_timestamp_reads_exactly_the_records_at_or_after_it(broker):
    _create_topic(broker, "b-ts", 3)
    base = int(time.time() * 1000) - 3_600_000  # an hour ago: well inside the retention
    producer = Producer({"bootstrap.servers": broker.bootstrap, "log_level": 0})
    for i in range(90):  # record i has CreateTime base + i s; every partition's timestamps rise with its offsets
        producer.produce("b-ts", value=event(i), key=f"k{i}", timestamp=base + i * 1000)
    assert producer.flush(30) == 0
    at = base + 60 * 1000  # exactly record e60's timestamp: it is included
    uri = f"kafka://{broker.bootstrap}/b-ts?group=g-ts&start=timestamp&at={iso_ms(at)}"
    poller = KafkaSource(parse_source_uri(uri), "sessions").poller()
    poller.open()
    seen = drain(poller, 30)
    seen += drain(poller, 1, timeout_s=2.0)  # and nothing more
    poller.close()
    assert sorted(e for _, e in seen) == ids(60, 90) and len(seen) == 30
    assert {p for p, _ in seen} == {0, 1, 2}


def test_partitions_added_while_running_are_discovered_and_read(broker):
    _create_topic(broker, "b-grow", 2)
    write_events(broker.bootstrap, "b-grow", 0, 100)
    poller = KafkaPoller(broker.bootstrap, "b-grow", "g-grow", discovery_interval_s=0.5)
    poller.open()
    first = drain(poller, 100)
    assert sorted(e for _, e in first) == ids(0, 100) and {p for p, _ in first} == {0, 1}
    admin = _admin(broker)
    admin.create_partitions([NewPartitions("b-grow", 5)])["b-grow"].result(timeout=30)
    _wait_partitions(broker, "b-grow", 5)
    write_events(broker.bootstrap, "b-grow", 100, 200)  # a new producer: it spreads the keys over all 5
    second = drain(poller, 200, timeout_s=30)
    second += drain(poller, 1, timeout_s=2.0)
    poller.close()
    assert sorted(e for _, e in second) == ids(100, 300) and len(second) == 200  # nothing lost, nothing twice
    assert {p for p, _ in second} == {0, 1, 2, 3, 4}
    for partition in range(5):
        numbers = [int(e[1:]) for p, e in first + second if p == partition]
        assert numbers == sorted(numbers)


def test_two_readers_in_one_group_each_read_every_record(broker):
    """The reader is no group member: it assigns itself every partition (Beam's restriction, one reader per
    source, is the unit of work) and uses the group only to store offsets. So two readers in one group do not
    split the partitions by a rebalance: each reads every record once, and the group stays without members.
    Their commits are the same positions at the end: a third reader in the group starts after them."""
    write_events(broker.bootstrap, "b-group", 0, 200)
    one = KafkaPoller(broker.bootstrap, "b-group", "g-two")
    two = KafkaPoller(broker.bootstrap, "b-group", "g-two")
    one.open()
    two.open()
    seen_one, seen_two = [], []
    deadline = time.monotonic() + 30
    while (len(seen_one) < 200 or len(seen_two) < 200) and time.monotonic() < deadline:
        seen_one += drain(one, 1, timeout_s=0.3)
        seen_two += drain(two, 1, timeout_s=0.3)
    seen_one += drain(one, 1, timeout_s=1.0)
    seen_two += drain(two, 1, timeout_s=1.0)
    assert sorted(e for _, e in seen_one) == ids(0, 200) and len(seen_one) == 200
    assert sorted(e for _, e in seen_two) == ids(0, 200) and len(seen_two) == 200
    admin = _admin(broker)
    group = admin.describe_consumer_groups(["g-two"])["g-two"].result(timeout=10)
    assert group.members == []
    one.close()
    two.close()
    write_events(broker.bootstrap, "b-group", 200, 50)
    third = KafkaPoller(broker.bootstrap, "b-group", "g-two")
    third.open()
    seen = drain(third, 50)
    seen += drain(third, 1, timeout_s=1.0)
    third.close()
    assert sorted(e for _, e in seen) == ids(200, 250) and len(seen) == 50


def test_a_broker_restart_mid_stream_loses_nothing(broker):
    """The reader goes on from its own positions through a broker restart: every record once (its contract is
    at-least-once only across a restart of the reader, whose group offsets may lag; here the reader stays)."""
    write_events(broker.bootstrap, "b-restart", 0, 300)
    poller = KafkaPoller(broker.bootstrap, "b-restart", "g-restart", max_records=50, discovery_interval_s=60)
    poller.open()
    before = drain(poller, 100)
    assert 100 <= len(before) < 300
    broker.stop()
    began = time.monotonic()
    # the brokers are away: no error, no hang; the polls hand over what librdkafka had fetched already
    down = drain(poller, 300, timeout_s=3.0)
    assert time.monotonic() - began < 10
    broker.start()  # the same ports, the same log dir
    write_events(broker.bootstrap, "b-restart", 300, 200)
    after = drain(poller, 500 - len(before) - len(down), timeout_s=60)
    after += drain(poller, 1, timeout_s=2.0)
    seen = before + down + after
    assert sorted(e for _, e in seen) == ids(0, 500) and len(seen) == 500
    poller.poll()  # commits what the last polls handed over
    poller.close()
    again = KafkaPoller(broker.bootstrap, "b-restart", "g-restart")
    again.open()
    assert drain(again, 1, timeout_s=2.0) == []  # the commits after the restart landed
    again.close()


def test_sasl_scram_reads_with_the_password_from_the_environment(broker, monkeypatch):
    monkeypatch.setenv(SASL_PASSWORD_ENV, broker.scram_users[SCRAM_USER])
    sasl = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": SCRAM_USER}
    write_events(broker.sasl_bootstrap, "b-sasl", 0, 40, extra=sasl)
    write_events(broker.bootstrap, "b-sasl", 40, 40)
    source = KafkaSource(parse_source_uri(_sasl_uri(broker, "b-sasl", "g-sasl")), "sessions")
    source.check()
    poller = source.poller()
    poller.open()
    seen = drain(poller, 80)
    seen += drain(poller, 1, timeout_s=1.0)
    poller.close()
    assert sorted(e for _, e in seen) == ids(0, 80) and len(seen) == 80


def test_sasl_a_wrong_password_is_one_clear_error_at_once(broker, monkeypatch):
    monkeypatch.setenv(SASL_PASSWORD_ENV, "not-" + broker.scram_users[SCRAM_USER])
    write_events(broker.bootstrap, "b-sasl-wrong", 0, 1)
    source = KafkaSource(parse_source_uri(_sasl_uri(broker, "b-sasl-wrong", "g-sasl")), "sessions")
    began = time.monotonic()
    with pytest.raises(
        ValueError, match=r"^kafka://127\.0\.0\.1:\d+/b-sasl-wrong: authentication failed \(.*invalid credentials"
    ):
        source.check()
    assert time.monotonic() - began < 5  # not the 10 s metadata timeout
    with pytest.raises(RuntimeError, match=r"^kafka: authentication failed \(.*invalid credentials"):
        write_events(
            broker.sasl_bootstrap,
            "b-sasl-wrong",
            1,
            1,
            extra={
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-256",
                "sasl.username": SCRAM_USER,
            },
        )
    assert time.monotonic() - began < 10


def test_pipeline_reads_sessions_and_requests_from_kafka(broker, tmp_path):
    _create_topic(broker, "b-events", 1)
    write_events(broker.bootstrap, "b-sessions", 0, 500)
    write_events(broker.bootstrap, "b-sessions", 0, 100)  # a producer retry: the same events again
    events = [
        json.dumps({"type": "page_view", "user_id": "u1"}).encode(),
        json.dumps({"type": "gdpr.delete_user", "request_id": "k-1", "subject_id": "u7", "requested_at": T0}).encode(),
    ]
    producer = Producer({"bootstrap.servers": broker.bootstrap, "log_level": 0})
    for value in events:
        producer.produce("b-events", value=value)
    assert producer.flush(30) == 0
    base = "group=g-e2e&idle_stop_s=3"
    summary = run(
        [
            f"--output={tmp_path / 'out'}",
            f"--registry=embedded://{tmp_path}/r.sqlite",
            f"--sessions=kafka://{broker.bootstrap}/b-sessions?{base}",
            f"--requests=kafka://{broker.bootstrap}/b-events?{base}",
            "--request_tag_field=type",
            "--request_tag_values=gdpr.delete_user",
        ]
    )
    assert summary["mode"] == "streaming"
    assert summary["sessions_in"] == 600 and summary["duplicates"] == 100
    assert summary["conservation_ok"] is True
    assert summary["requests_in"] == 2 and summary["requests_ignored"] == 1 and summary["requests_accepted"] == 1
    assert summary["suppressed"] == 13 and summary["clean"] == 487  # u7's events: e7, e47, ..., e487
    archived = archive_rows(str(tmp_path / "out"))
    assert archived.num_rows == summary["clean"]
    assert len(set(archived.column("event_id").to_pylist())) == archived.num_rows
