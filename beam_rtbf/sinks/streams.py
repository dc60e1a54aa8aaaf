"""Writers for stream URIs (``beam-rtbf generate --to URI`` and tests): batched puts at a target rate."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pyarrow as pa

from beam_rtbf.sources.spec import parse_source_uri

__all__ = ["writer_for", "write_at_rate"]


def writer_for(uri: str):
    """A writer with ``write(records: list[bytes], keys: list[str]) -> int`` for a stream URI."""
    spec = parse_source_uri(uri)
    if spec.scheme == "kinesis":
        from beam_rtbf.sources.kinesis import KinesisWriter

        return KinesisWriter(spec.location.strip("/"), spec.get_str("region"), spec.get_str("endpoint"))
    if spec.scheme == "kafka":
        from beam_rtbf.sources.kafka import KafkaWriter, parse_kafka_uri

        bootstrap, topic = parse_kafka_uri(spec)
        extra = {k[len("kafka.") :]: v for k, v in spec.params.items() if k.startswith("kafka.")}
        return KafkaWriter(bootstrap, topic, extra)
    if spec.scheme == "pubsub":
        from beam_rtbf.sources.pubsub import PubSubWriter

        return PubSubWriter(spec)
    raise ValueError(f"no writer for {uri!r}: use kinesis://, kafka:// or pubsub://")


def write_at_rate(writer, batches: Iterable[tuple[list[bytes], list[str]]], rate_per_s: float | None) -> dict:
    """Write batches, sleeping between them so the average stays at ``rate_per_s`` (None: as fast as possible)."""
    started = time.perf_counter()
    written = 0
    for records, keys in batches:
        written += writer.write(records, keys)
        if rate_per_s:
            ahead = written / rate_per_s - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
    elapsed = time.perf_counter() - started
    return {"written": written, "elapsed_s": round(elapsed, 3), "records_per_s": round(written / elapsed, 1)}


def lines_and_keys(jsonl: bytes, user_ids: pa.Array, chunk: int = 500) -> Iterable[tuple[list[bytes], list[str]]]:
    lines = jsonl.splitlines()
    keys = user_ids.to_pylist()
    for start in range(0, len(lines), chunk):
        yield lines[start : start + chunk], keys[start : start + chunk]
