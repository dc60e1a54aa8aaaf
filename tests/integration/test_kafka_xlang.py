"""Beam's cross-language ReadFromKafka (Java KafkaIO, expansion service + Java worker pool from
beam_rtbf.testing.java_kafka) on flink-local reads exactly the records beam-rtbf's native reader
reads from a real broker. Beam's Java servers bind every interface: the whole run happens in a
network namespace of its own (tests/helpers/kafka_xlang_run.py)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers.engine_runs import ROOT
from tests.helpers.netns import run_in_netns

pytestmark = [pytest.mark.slow, pytest.mark.integration]

RECORDS = 1_500


def test_cross_language_read_from_kafka_on_flink_reads_what_the_native_reader_reads(tmp_path):
    done = run_in_netns(
        [sys.executable, "tests/helpers/kafka_xlang_run.py", str(tmp_path), str(RECORDS)], timeout=900, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-4000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    native, java = got["native"], got["java"]
    assert len(native) == RECORDS and len(java) == RECORDS
    assert java == native  # same (partition, offset, value) for every record, none twice
    assert sorted(json.loads(value)["n"] for _, _, value in java) == list(range(RECORDS))
    assert {partition for partition, _, _ in java} == {0, 1, 2}
