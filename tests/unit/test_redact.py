"""Secrets are masked by form (URLs, secret-named options, bearer tokens) and by value."""

from __future__ import annotations

import logging

import pytest

from beam_rtbf.redact import MaskSecretsFilter, mask_secrets


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://rtbf:hunter2@db:5432/rtbf", "postgresql://rtbf:***@db:5432/rtbf"),
        ("kafka://b1:9093/t?group=g&kafka.sasl.password=hunter2&x=1", "kafka://b1:9093/t?group=g&kafka.sasl.password=***&x=1"),
        ("--s3_secret_access_key=abc", "--s3_secret_access_key=***"),
        ('{"Authorization": "Bearer abc.def", "Host": "x"}', '{"Authorization": "Bearer ***", "Host": "x"}'),
        ("kafka://b1:9092,b2:9092/topic?group=g", "kafka://b1:9092,b2:9092/topic?group=g"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("file:///data/a:b/u1@example.com.jsonl", "file:///data/a:b/u1@example.com.jsonl"),
        ("the erasure API needs a bearer token: set $RTBF_ERASURE_API_TOKEN", "the erasure API needs a bearer token: set $RTBF_ERASURE_API_TOKEN"),
    ],
)  # fmt: skip
def test_secrets_are_masked_by_form_and_nothing_else_is(text, masked):
    assert mask_secrets(text) == masked


def test_log_records_lose_secret_values_from_the_environment(monkeypatch):
    monkeypatch.setenv("RTBF_REDIS_PASSWORD", "pw-from-env-1")
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "auth with %s failed at %s", ("pw-from-env-1", "redis://:p2@h/0"), None
    )
    assert MaskSecretsFilter().filter(record) is True
    assert record.getMessage() == "auth with *** failed at redis://:***@h/0"
