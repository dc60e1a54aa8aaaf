"""sources/kpl.py: KPL de-aggregation, checked against protobuf's own encoder; the Kinesis reader's use of it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from beam_rtbf.parse.session_batch import parse_session_chunk
from beam_rtbf.sources import kpl
from beam_rtbf.sources.kinesis import KinesisPoller
from tests import adversarial as adv


def _aggregated_record_class():
    """The KPL's AggregatedRecord message, built from its .proto definition by protobuf itself."""
    f = descriptor_pb2.FileDescriptorProto(name="kpl_test.proto", package="kpltest", syntax="proto2")
    tag = f.message_type.add(name="Tag")
    tag.field.add(name="key", number=1, type=9, label=2)
    tag.field.add(name="value", number=2, type=9, label=1)
    record = f.message_type.add(name="Record")
    record.field.add(name="partition_key_index", number=1, type=4, label=2)
    record.field.add(name="explicit_hash_key_index", number=2, type=4, label=1)
    record.field.add(name="data", number=3, type=12, label=2)
    record.field.add(name="tags", number=4, type=11, label=3, type_name=".kpltest.Tag")
    agg = f.message_type.add(name="AggregatedRecord")
    agg.field.add(name="partition_key_table", number=1, type=9, label=3)
    agg.field.add(name="explicit_hash_key_table", number=2, type=9, label=3)
    agg.field.add(name="records", number=3, type=11, label=3, type_name=".kpltest.Record")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("kpltest.AggregatedRecord"))


def test_deaggregates_what_protobuf_itself_encodes_with_hash_keys_and_tags():
    message = _aggregated_record_class()()
    message.partition_key_table.extend(["pk-a", "pk-b"])
    message.explicit_hash_key_table.extend(["12345"])
    for i in range(5):
        record = message.records.add(partition_key_index=i % 2, data=b'{"user_id":"u%d"}' % i)
        if i == 3:
            record.explicit_hash_key_index = 0
            record.tags.add(key="t", value="v")
    body = message.SerializeToString()
    data = kpl.KPL_MAGIC + body + hashlib.md5(body).digest()
    assert kpl.deaggregate(data) == [
        kpl.UserRecord("pk-a", None, b'{"user_id":"u0"}'),
        kpl.UserRecord("pk-b", None, b'{"user_id":"u1"}'),
        kpl.UserRecord("pk-a", None, b'{"user_id":"u2"}'),
        kpl.UserRecord("pk-b", "12345", b'{"user_id":"u3"}'),
        kpl.UserRecord("pk-a", None, b'{"user_id":"u4"}'),
    ]


def test_our_aggregate_is_what_protobuf_decodes():
    records = [(f"k{i % 3}", b"x" * i) for i in range(200)]
    data = kpl.aggregate(records)
    message = _aggregated_record_class()()
    message.ParseFromString(data[4:-16])
    assert [(message.partition_key_table[r.partition_key_index], r.data) for r in message.records] == records
    assert [(r.partition_key, r.data) for r in kpl.deaggregate(data)] == records


def test_a_record_without_the_magic_passes_through_whole():
    assert kpl.deaggregate(b'{"user_id":"u"}') == [kpl.UserRecord("", None, b'{"user_id":"u"}')]


@pytest.mark.parametrize("case", adv.KPL_CORRUPT, ids=[c.name for c in adv.KPL_CORRUPT])
def test_corrupt_aggregate_raises_with_the_reason(case):
    with pytest.raises(kpl.KplError, match="bad KPL aggregate") as info:
        kpl.deaggregate(case.raw)
    assert case.reason in str(info.value)


class _FakeKinesis:
    """Just enough of the boto3 client for one shard holding the given records."""

    def __init__(self, records: list[bytes]) -> None:
        stamp = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        self.records = [
            {"Data": d, "SequenceNumber": f"{100 + i}", "ApproximateArrivalTimestamp": stamp}
            for i, d in enumerate(records)
        ]

    def list_shards(self, **_):
        return {"Shards": [{"ShardId": "shardId-0"}]}

    def get_shard_iterator(self, **_):
        return {"ShardIterator": "it"}

    def get_records(self, **_):
        return {"Records": self.records, "NextShardIterator": "it2", "MillisBehindLatest": 0}


def test_poller_turns_each_user_record_into_a_session_and_a_corrupt_aggregate_into_one_dead_letter():
    users = [("k", json.dumps({"user_id": f"kpl{i}"}).encode()) for i in range(100)]
    records = [b'{"user_id":"plain"}', kpl.aggregate(users), adv.kpl_bad_md5()]
    poller = KinesisPoller("s", "us-east-1", "http://unused")
    poller._client = _FakeKinesis(records)  # what open() would create
    poller._discover()
    elements = [element for element, _ in poller.poll().elements]
    parsed = [parse_session_chunk(raw) for raw in elements]
    ids = [u for p in parsed for u in p.batch.column("user_id").to_pylist()]
    assert ids == ["plain"] + [f"kpl{i}" for i in range(100)]
    assert elements[0].positions[:3] == (
        "kinesis://s/shardId-0@100",
        "kinesis://s/shardId-0@101:0",
        "kinesis://s/shardId-0@101:1",
    )
    [letter] = [d for p in parsed for d in p.dead_letters]
    assert (letter.position, letter.reason, letter.raw) == (
        "kinesis://s/shardId-0@102",
        "bad KPL aggregate: MD5 checksum mismatch",
        records[2],
    )
    assert sum(p.records_in for p in parsed) == 102
    assert poller.checkpoint()["shardId-0"]["last_seq"] == "102"
