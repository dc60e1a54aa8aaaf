"""Run inside a network namespace (tests/integration/test_kafka_xlang.py): a Kafka broker, records
produced to it, then the same topic read twice, by beam-rtbf's native reader and by Beam's Java
KafkaIO through the cross-language ``ReadFromKafka`` on flink-local; prints one JSON object.

    python tests/helpers/kafka_xlang_run.py WORK_DIR RECORDS
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time

import apache_beam as beam
from apache_beam.io.kafka import ReadFromKafka
from apache_beam.options.pipeline_options import PipelineOptions
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from beam_rtbf.job_servers import job_server_jar  # noqa: E402
from beam_rtbf.sources.kafka import KafkaPoller  # noqa: E402
from beam_rtbf.testing.java_kafka import JavaKafkaServices  # noqa: E402
from beam_rtbf.testing.kafka_broker import KafkaBroker  # noqa: E402

TOPIC, PARTITIONS = "sessions", 3


def produce(bootstrap: str, count: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    for i in range(count):
        value = json.dumps({"user_id": f"u{i % 97}", "n": i, "text": 'é \u2028 \\" end'}, ensure_ascii=False)
        producer.produce(TOPIC, key=f"u{i % 97}".encode(), value=value.encode(), partition=i % PARTITIONS)
    producer.flush(30)


def native(bootstrap: str, count: int) -> list[list]:
    """(partition, offset, value) of every record, through beam-rtbf's own reader."""
    poller = KafkaPoller(bootstrap, TOPIC, group="native")
    poller.open()
    got: list[list] = []
    deadline = time.monotonic() + 120
    try:
        while len(got) < count and time.monotonic() < deadline:
            for batch, _ in poller.poll().elements:
                lines = batch.data.rstrip(b"\n").split(b"\n")
                for position, line in zip(batch.positions, lines):
                    partition, offset = position.rsplit("/", 1)[1].split("@")
                    got.append([int(partition), int(offset), line.decode()])
    finally:
        poller.close()
    return got


def cross_language(bootstrap: str, count: int, work: str) -> tuple[list[list], float]:
    """The same records through Beam's Java KafkaIO on Flink (bounded by ``max_num_records``)."""
    out = os.path.join(work, "xlang", "records")
    options = PipelineOptions(
        [
            "--runner=FlinkRunner",
            "--flink_master=[local]",
            "--environment_type=LOOPBACK",
            "--parallelism=2",
            f"--flink_job_server_jar={job_server_jar('flink')}",
        ]
    )
    started = time.monotonic()
    with JavaKafkaServices(log_dir=work) as java:
        with beam.Pipeline(options=options) as p:
            _ = (
                p
                | ReadFromKafka(
                    consumer_config={
                        "bootstrap.servers": bootstrap,
                        "auto.offset.reset": "earliest",
                        "group.id": "java",
                    },
                    topics=[TOPIC],
                    with_metadata=True,
                    max_num_records=count,
                    expansion_service=java.expansion_address,
                )
                | beam.Map(lambda r: json.dumps([r.partition, r.offset, r.value.decode()], ensure_ascii=False))
                | beam.io.WriteToText(out)
            )
    elapsed = time.monotonic() - started
    rows = [json.loads(line) for path in glob.glob(out + "*") for line in open(path, encoding="utf-8")]
    return rows, elapsed


def main() -> None:
    work, count = sys.argv[1], int(sys.argv[2])
    broker = KafkaBroker(os.path.join(work, "kafka"))
    broker.start()
    try:
        produce(broker.bootstrap, count)
        mine = native(broker.bootstrap, count)
        java, elapsed = cross_language(broker.bootstrap, count, work)
    finally:
        broker.stop()
    print(json.dumps({"native": sorted(mine), "java": sorted(java), "java_elapsed_s": elapsed}))


if __name__ == "__main__":
    main()
