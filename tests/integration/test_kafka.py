"""Kafka source against librdkafka's mock cluster and a real Apache Kafka broker (KRaft, one node).

Every test here runs twice, on the ``kafka`` fixture's two servers: "mock"
(librdkafka's mock cluster, three brokers, the real protocol on loopback ports,
in seconds) and "broker" (``beam_rtbf.testing.kafka_broker``, marked slow).
What the mock cannot do is tested against the real broker only, in
``test_kafka_broker.py``: start=timestamp (the mock answers ListOffsets by time
with -1), partitions added while running (the mock refuses CreatePartitions),
two readers in one group, a broker restart mid-stream, SASL/SCRAM, and an
end-to-end run with sessions and requests from Kafka topics. Not covered
anywhere: TLS, a multi-broker real cluster, behaviour under load.
"""

from __future__ import annotations

import json

import pytest

from beam_rtbf.pipeline import run
from beam_rtbf.sources.kafka import KafkaPoller
from beam_rtbf.testing.kafka_broker import KafkaBroker
from beam_rtbf.testing.kafka_mock import KafkaMockCluster
from beam_rtbf.testing.redis_server import free_port
from tests.helpers.data import T0
from tests.helpers.kafka import drain, write_events

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["mock", pytest.param("broker", marks=pytest.mark.slow)])
def kafka(request, tmp_path_factory):
    if request.param == "mock":
        server = KafkaMockCluster(3)
    else:
        server = KafkaBroker(str(tmp_path_factory.mktemp("kafka-broker")))
    server.start()
    yield server
    server.stop()


def test_reads_all_partitions_once_in_partition_order(kafka):
    write_events(kafka.bootstrap, "t-order", 0, 400)
    poller = KafkaPoller(kafka.bootstrap, "t-order", "g-order")
    poller.open()
    seen = drain(poller, 400)
    assert sorted(e for _, e in seen) == sorted(f"e{i}" for i in range(400)) and len(seen) == 400
    assert {p for p, _ in seen} == set(range(kafka.default_partitions))  # the partitions of an auto-created topic
    for partition in {p for p, _ in seen}:
        numbers = [int(e[1:]) for p, e in seen if p == partition]
        assert numbers == sorted(numbers)
    poller.close()


def test_restart_resumes_from_committed_offsets_without_rereading(kafka):
    write_events(kafka.bootstrap, "t-restart", 0, 200)
    first = KafkaPoller(kafka.bootstrap, "t-restart", "g-restart")
    first.open()
    assert len(drain(first, 200)) == 200
    first.poll()  # the next poll commits what the previous one handed over
    first.close()
    write_events(kafka.bootstrap, "t-restart", 200, 60)
    second = KafkaPoller(kafka.bootstrap, "t-restart", "g-restart")
    second.open()
    seen = drain(second, 60)
    seen += drain(second, 1, timeout_s=1.0)
    assert sorted(e for _, e in seen) == sorted(f"e{i}" for i in range(200, 260))
    second.close()


def test_start_latest(kafka):
    """(start=timestamp asks the broker's ListOffsets by time, which the mock answers with -1 for
    every partition: it is not tested here, only against real brokers.)"""
    write_events(kafka.bootstrap, "t-start", 0, 50)
    latest = KafkaPoller(kafka.bootstrap, "t-start", "g-latest", start="latest")
    latest.open()
    write_events(kafka.bootstrap, "t-start", 50, 10)
    assert sorted(e for _, e in drain(latest, 10)) == sorted(f"e{i}" for i in range(50, 60))
    latest.close()


def test_missing_topic_and_unreachable_brokers_are_clear_errors(kafka):
    with pytest.raises(ValueError, match="t-missing: topic unavailable"):
        KafkaPoller(kafka.bootstrap, "t-missing", "g").open()
    with pytest.raises(ValueError, match="cannot reach the brokers"):
        KafkaPoller(f"127.0.0.1:{free_port()}", "t", "g", metadata_timeout_s=1.0).open()
    with pytest.raises(ValueError, match="RTBF_KAFKA_SASL_PASSWORD"):
        KafkaPoller(kafka.bootstrap, "t-order", "g", extra={"sasl.password": "x"}).open()


@pytest.mark.slow
def test_pipeline_reads_sessions_from_kafka(kafka, tmp_path):
    write_events(kafka.bootstrap, "t-sessions", 0, 800)
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"request_id": "k1", "subject_id": "u3", "requested_at": T0}) + "\n")
    summary = run(
        [
            f"--output={tmp_path / 'out'}",
            f"--registry=embedded://{tmp_path}/r.sqlite",
            f"--sessions=kafka://{kafka.bootstrap}/t-sessions?group=g-pipe&idle_stop_s=2",
            f"--requests=file://{requests}",
        ]
    )
    assert summary["mode"] == "streaming" and summary["sessions_in"] == 800
    assert summary["clean"] + summary["suppressed"] == 800 and summary["requests_accepted"] == 1


def test_a_poller_restored_from_a_checkpoint_continues_exactly(kafka):
    write_events(kafka.bootstrap, "t-resume", 0, 300)
    first = KafkaPoller(kafka.bootstrap, "t-resume", "g-resume-a", max_records=40)
    first.open()
    read = drain(first, 80)
    state = first.checkpoint()
    resumed = KafkaPoller(kafka.bootstrap, "t-resume", "g-resume-b")  # another group: only the state counts
    resumed.restore(state)
    resumed.open()
    rest = drain(resumed, 300 - len(read))
    rest += drain(resumed, 1, timeout_s=1.0)
    assert sorted(e for _, e in read + rest) == sorted(f"e{i}" for i in range(300))
    assert len(read) + len(rest) == 300


SEEN: list[tuple[int, str]] = []  # (partition, event id) as the read emitted them


def _record_seen(raw) -> None:
    partition = int(raw.source.rsplit("/", 1)[1])
    SEEN.extend((partition, json.loads(line)["event_id"]) for line in raw.data.splitlines())


@pytest.mark.slow
def test_sharded_read_gives_each_partition_a_restriction_and_reads_every_record_once(kafka, tmp_path, monkeypatch):
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from beam_rtbf.sources import source_for

    trace = tmp_path / "trace.jsonl"
    write_events(kafka.bootstrap, "t-sharded", 0, 600)
    SEEN.clear()
    source = source_for(f"kafka://{kafka.bootstrap}/t-sharded?group=g-sharded&idle_stop_s=1.5", "sessions")
    assert [s.shard_id for s in source.shards().discover()] == ["0", "1", "2", "3"]
    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = p | source.streaming_read(str(trace)) | beam.Map(_record_seen)
    assert sorted(e for _, e in SEEN) == sorted(f"e{i}" for i in range(600))  # each once
    calls = [json.loads(line) for line in trace.read_text().splitlines()]
    assert {c["root"] for c in calls if c["rows"]} == {"0", "1", "2", "3"}  # a restriction per partition
    for partition in range(4):  # in offset order within a partition
        numbers = [int(e[1:]) for p, e in SEEN if p == partition]
        assert numbers == sorted(numbers)
    assert sum(c["rows"] for c in calls) == 600
    resumed = KafkaPoller(kafka.bootstrap, "t-sharded", "g-sharded")  # each reader committed its partition
    resumed.open()
    assert drain(resumed, 1, timeout_s=1.0) == []
    assert resumed.positions == {p: sum(1 for q, _ in SEEN if q == p) for p in range(4)}
    resumed.close()
