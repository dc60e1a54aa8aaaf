"""Source URIs refuse parameters they do not read, in one line naming the valid ones."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from beam_rtbf.sources import SOURCES, source_for

README = Path(__file__).resolve().parents[2] / "README.md"

KAFKA_VALID = (
    "group, start, at, idle_stop_s, max_records, discovery_interval_s, metadata_timeout_s, impl, "
    "expansion_service, kafka.*"
)
KINESIS_VALID = "region, endpoint, start, at, checkpoint, idle_stop_s, max_records, discovery_interval_s"
SYNTHETIC_VALID = (
    "users, sessions, requests, seed, rate, request_rate, duration_s, active_users, start, span_s, bad_rate, "
    "shards, batch_rows, max_delay_ms"
)


@pytest.mark.parametrize(
    ("uri", "stream", "message"),
    [
        (
            "kafka://h:9092/topic?grup=g",
            "sessions",
            "source 'kafka://h:9092/topic?grup=g': unknown parameter 'grup' (did you mean 'group'?); "
            f"valid: {KAFKA_VALID}",
        ),
        (
            "kafka://h:9092/topic?group=g&sasl.username=u",
            "sessions",
            "source 'kafka://h:9092/topic?group=g&sasl.username=u': unknown parameter 'sasl.username' "
            f"(did you mean 'kafka.sasl.username'?); valid: {KAFKA_VALID}",
        ),
        (
            "kafka://h:9092/topic?kafak.sasl.username=u",
            "sessions",
            "source 'kafka://h:9092/topic?kafak.sasl.username=u': unknown parameter 'kafak.sasl.username' "
            f"(did you mean 'kafka.sasl.username'?); valid: {KAFKA_VALID}",
        ),
        (
            "kinesis://events?regoin=eu-west-1&foo=1",
            "requests",
            "source 'kinesis://events?regoin=eu-west-1&foo=1': unknown parameters 'regoin' (did you mean "
            f"'region'?), 'foo'; valid: {KINESIS_VALID}",
        ),
        (
            "pubsub://projects/p/subscriptions/s?topik=t",
            "sessions",
            "source 'pubsub://projects/p/subscriptions/s?topik=t': unknown parameter 'topik' (did you mean "
            "'topic'?); valid: topic, idle_stop_s, max_messages, ack_deadline_s",
        ),
        (
            "file:///data/*.jsonl?fromat=csv",
            "sessions",
            "source 'file:///data/*.jsonl?fromat=csv': unknown parameter 'fromat' (did you mean 'format'?); "
            "valid: format, chunk_bytes",
        ),
        (
            "gs://bucket/x/*.csv?compression=gzip",
            "sessions",
            "source 'gs://bucket/x/*.csv?compression=gzip': unknown parameter 'compression'; "
            "valid: format, chunk_bytes",
        ),
        (
            "s3://bucket/x/*.jsonl?chunk_byte=10",
            "sessions",
            "source 's3://bucket/x/*.jsonl?chunk_byte=10': unknown parameter 'chunk_byte' (did you mean "
            "'chunk_bytes'?); valid: format, chunk_bytes",
        ),
        (
            "synthetic://sessions?users=5&sesions=10",
            "sessions",
            "source 'synthetic://sessions?users=5&sesions=10': unknown parameter 'sesions' (did you mean "
            f"'sessions'?); valid: {SYNTHETIC_VALID}",
        ),
        (
            "synthetic://sessions?users=5&start_ms=0",  # a config field, but not a URI parameter
            "sessions",
            "source 'synthetic://sessions?users=5&start_ms=0': unknown parameter 'start_ms' (did you mean "
            f"'start'?); valid: {SYNTHETIC_VALID}",
        ),
    ],
    ids=["kafka", "kafka-missing-prefix", "kafka-misspelt-prefix", "kinesis", "pubsub", "file", "gs", "s3",
         "synthetic", "synthetic-field"],
)  # fmt: skip
def test_an_unknown_parameter_is_one_line_naming_the_valid_ones(uri, stream, message):
    with pytest.raises(ValueError) as error:
        source_for(uri, stream)
    assert str(error.value) == message
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "uri",
    [
        "kafka://user:hunter2@h:9092/t?grup=g",
        "kafka://h:9092/t?group=g&passwd=hunter2",
        "kinesis://s?region=r&api_key=hunter2",
    ],
)
def test_secrets_stay_masked_in_the_error(uri):
    with pytest.raises(ValueError) as error:
        source_for(uri, "sessions")
    assert "unknown parameter" in str(error.value)
    assert "hunter2" not in str(error.value)
    assert "***" in str(error.value)


def _readme_uri_params() -> dict[str, set[str]]:
    """Every ``?name=``/``&name=`` the README shows in a source URI, by scheme."""
    found: dict[str, set[str]] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        for scheme, query in re.findall(r"\b([a-z0-9]+)://[^\s`?]*\?([^\s`]*)", line):
            if scheme in SOURCES:
                found.setdefault(scheme, set()).update(re.findall(r"(?:^|[&\[?])([a-z_.]+)(?:=|<)", query))
    return found


def test_every_parameter_the_readme_shows_is_accepted():
    shown = _readme_uri_params()
    assert shown == {
        "kinesis": {"region", "endpoint", "start", "at", "checkpoint"},
        "kafka": {"group", "start", "at", "kafka."},
        "pubsub": {"topic"},
        "synthetic": {
            "users",
            "sessions",
            "seed",
            "rate",
            "duration_s",
            "shards",
            "requests",
            "request_rate",
            "active_users",
        },
    }
    for scheme, names in shown.items():
        for name in names:
            if name.endswith("."):
                assert name in SOURCES[scheme].PARAM_PREFIXES, (scheme, name)
            else:
                assert name in SOURCES[scheme].PARAMS, (scheme, name)


@pytest.mark.parametrize(
    ("uri", "stream"),
    [
        # the README's tables, with the optional parts and the names it lists in prose
        ("file:///data/x.csv?format=csv&chunk_bytes=1048576", "sessions"),
        ("s3://acme-raw/sessions/*.jsonl.gz?format=jsonl", "sessions"),
        ("gs://acme-raw/sessions/*.tsv?format=tsv", "sessions"),
        ("synthetic://sessions?users=10&sessions=20&seed=3&span_s=60&bad_rate=0.1&start=2026-01-01T00:00:00Z"
         "&shards=2&batch_rows=100", "sessions"),
        ("synthetic://sessions?users=10&rate=5&duration_s=1&max_delay_ms=100", "sessions"),
        ("synthetic://sessions?users=10&rate=8&duration_s=1&shards=4", "sessions"),
        ("synthetic://requests?users=10&requests=2&seed=3", "requests"),
        ("synthetic://requests?users=10&request_rate=1&active_users=5", "requests"),
        ("kinesis://events?region=eu-west-1&endpoint=http://127.0.0.1:4566&start=AT_TIMESTAMP"
         "&at=2026-01-01T00:00:00Z&checkpoint=/tmp/ck.json&idle_stop_s=5&max_records=10"
         "&discovery_interval_s=1", "requests"),
        ("kafka://b1:9092,b2:9092/sessions?group=G&start=timestamp&at=2026-01-01T00:00:00Z"
         "&kafka.security.protocol=SASL_SSL&kafka.sasl.mechanism=SCRAM-SHA-512&kafka.sasl.username=rtbf"
         "&idle_stop_s=5&max_records=10&discovery_interval_s=1&metadata_timeout_s=2", "sessions"),
        ("kafka://h:9092/t?impl=xlang&expansion_service=127.0.0.1:8097", "sessions"),
        ("pubsub://projects/P/subscriptions/S?topic=T&idle_stop_s=5&max_messages=10&ack_deadline_s=30",
         "sessions"),
    ],
)  # fmt: skip
def test_documented_parameters_are_accepted(uri, stream):
    source = source_for(uri, stream)
    assert source.spec.uri == uri


@pytest.mark.parametrize("scheme", sorted(SOURCES))
def test_params_list_exactly_what_the_source_module_reads(scheme):
    """``PARAMS`` is declared once per source: it must match the names its module reads."""
    cls = SOURCES[scheme]
    code = inspect.getsource(inspect.getmodule(cls))
    read = set(re.findall(r"\.get_(?:str|int|float)\(\s*\"([a-z_]+)\"", code))
    assert read == set(cls.PARAMS)
    assert len(cls.PARAMS) == len(set(cls.PARAMS))
