"""Kinesis source against a real local endpoint (kinesalite): shards, splits, checkpoints, throttling."""

from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import ClientError

from beam_rtbf.pipeline import run
from beam_rtbf.sources.kinesis import KinesisPoller, KinesisWriter, kinesis_client
from beam_rtbf.testing.kinesalite import Kinesalite
from tests.helpers.data import T0, archive_rows

pytestmark = pytest.mark.integration


@pytest.fixture
def kinesis(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    server = Kinesalite()
    server.start()
    yield server
    server.stop()


def _create(endpoint: str, name: str, shards: int) -> None:
    client = kinesis_client("us-east-1", endpoint)
    client.create_stream(StreamName=name, ShardCount=shards)
    for _ in range(100):
        if client.describe_stream(StreamName=name)["StreamDescription"]["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.05)
    raise AssertionError("stream never became ACTIVE")


def _write(endpoint: str, name: str, start: int, count: int) -> None:
    records = [
        json.dumps({"user_id": f"u{i % 50}", "event_id": f"e{i}", "event_time": T0 + i}).encode()
        for i in range(start, start + count)
    ]
    assert (
        KinesisWriter(name, "us-east-1", endpoint).write(records, [f"k{i}" for i in range(start, start + count)])
        == count
    )


def _drain(poller: KinesisPoller, want: int, timeout_s: float = 20.0) -> list[tuple[str, str, int]]:
    """(shard, event_id, poll number) for every record read, until ``want`` are read."""
    seen = []
    deadline = time.monotonic() + timeout_s
    polls = 0
    while len(seen) < want and time.monotonic() < deadline:
        polls += 1
        for raw, _ in poller.poll().elements:
            shard = raw.source.rsplit("/", 1)[1]
            for line in raw.data.splitlines():
                seen.append((shard, json.loads(line)["event_id"], polls))
        time.sleep(0.02)
    return seen


def test_reads_every_record_of_every_shard_once_in_shard_order(kinesis):
    _create(kinesis.endpoint, "s2", 2)
    _write(kinesis.endpoint, "s2", 0, 300)
    poller = KinesisPoller("s2", "us-east-1", kinesis.endpoint, max_records=50)
    poller.open()
    seen = _drain(poller, 300)
    ids = [event for _, event, _ in seen]
    assert sorted(ids) == sorted(f"e{i}" for i in range(300)) and len(ids) == 300
    assert {shard for shard, _, _ in seen} == {"shardId-000000000000", "shardId-000000000001"}
    for shard in {s for s, _, _ in seen}:  # within a shard, the write order
        numbers = [int(e[1:]) for s, e, _ in seen if s == shard]
        assert numbers == sorted(numbers)
    poller.close()


def test_split_during_the_run_loses_nothing_and_reads_children_after_parent(kinesis):
    _create(kinesis.endpoint, "split", 1)
    _write(kinesis.endpoint, "split", 0, 120)
    poller = KinesisPoller("split", "us-east-1", kinesis.endpoint, max_records=40, discovery_interval_s=0.0)
    poller.open()
    first = _drain(poller, 40)
    client = kinesis_client("us-east-1", kinesis.endpoint)
    client.split_shard(StreamName="split", ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**127))
    for _ in range(100):
        if client.describe_stream(StreamName="split")["StreamDescription"]["StreamStatus"] == "ACTIVE":
            break
        time.sleep(0.05)
    _write(kinesis.endpoint, "split", 120, 120)  # these go to the two children
    rest = _drain(poller, 240 - len(first))
    seen = first + [(s, e, p + 1000) for s, e, p in rest]
    assert sorted(e for _, e, _ in seen) == sorted(f"e{i}" for i in range(240))
    parent_last = max(p for s, _, p in seen if s == "shardId-000000000000")
    child_first = min(p for s, _, p in seen if s != "shardId-000000000000")
    assert child_first > parent_last  # no child record before the parent ended
    assert {s for s, _, _ in seen} == {"shardId-000000000000", "shardId-000000000001", "shardId-000000000002"}
    assert poller.checkpoint()["shardId-000000000000"]["finished"] is True


def test_restart_resumes_from_the_checkpoint_without_losing_records(kinesis, tmp_path):
    _create(kinesis.endpoint, "cp", 2)
    _write(kinesis.endpoint, "cp", 0, 100)
    path = str(tmp_path / "cp.json")
    poller = KinesisPoller("cp", "us-east-1", kinesis.endpoint, checkpoint_path=path)
    poller.open()
    first = _drain(poller, 100)
    poller.close()  # a clean stop writes the checkpoint
    _write(kinesis.endpoint, "cp", 100, 50)
    resumed = KinesisPoller("cp", "us-east-1", kinesis.endpoint, checkpoint_path=path)
    resumed.open()
    second = _drain(resumed, 50)
    time.sleep(0.2)
    second += _drain(resumed, 1, timeout_s=0.5)  # nothing more may come
    assert sorted(e for _, e, _ in first) == sorted(f"e{i}" for i in range(100))
    assert sorted(e for _, e, _ in second) == sorted(f"e{i}" for i in range(100, 150))


def test_throttling_backs_off_and_loses_nothing(kinesis):
    _create(kinesis.endpoint, "hot", 2)
    _write(kinesis.endpoint, "hot", 0, 200)
    poller = KinesisPoller("hot", "us-east-1", kinesis.endpoint, max_records=25)
    poller.open()
    injected = {"left": 12}

    def throttle(**kwargs):
        if injected["left"] > 0:
            injected["left"] -= 1
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "GetRecords"
            )

    poller._client.meta.events.register("before-call.kinesis.GetRecords", throttle)
    seen = _drain(poller, 200)
    assert injected["left"] == 0 and poller.throttled == 12
    assert sorted(e for _, e, _ in seen) == sorted(f"e{i}" for i in range(200))


def test_missing_stream_and_missing_credentials_are_clear_errors(kinesis, monkeypatch):
    poller = KinesisPoller("nope", "us-east-1", kinesis.endpoint)
    with pytest.raises(ValueError, match="kinesis://nope: stream does not exist"):
        poller.open()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ValueError, match="no AWS credentials found"):
        KinesisPoller("nope", "us-east-1", kinesis.endpoint).open()


@pytest.mark.slow
def test_pipeline_reads_sessions_and_requests_from_kinesis(kinesis, tmp_path):
    _create(kinesis.endpoint, "sessions", 2)
    _create(kinesis.endpoint, "events", 1)
    _write(kinesis.endpoint, "sessions", 0, 500)
    _write(kinesis.endpoint, "sessions", 0, 100)  # a producer retry: the same events again
    events = [
        json.dumps({"type": "page_view", "user_id": "u1"}).encode(),
        json.dumps({"type": "gdpr.delete_user", "request_id": "k-1", "subject_id": "u7", "requested_at": T0}).encode(),
    ]
    KinesisWriter("events", "us-east-1", kinesis.endpoint).write(events, ["a", "b"])
    base = f"?region=us-east-1&endpoint={kinesis.endpoint}&idle_stop_s=2"
    summary = run(
        [
            f"--output={tmp_path / 'out'}",
            f"--registry=embedded://{tmp_path}/r.sqlite",
            f"--sessions=kinesis://sessions{base}",
            f"--requests=kinesis://events{base}",
            "--request_tag_field=type",
            "--request_tag_values=gdpr.delete_user",
        ]
    )
    assert summary["mode"] == "streaming"
    assert summary["sessions_in"] == 600 and summary["duplicates"] == 100
    assert summary["conservation_ok"] is True
    assert summary["requests_in"] == 2 and summary["requests_ignored"] == 1 and summary["requests_accepted"] == 1
    assert summary["clean"] + summary["suppressed"] == 500
    archived = archive_rows(str(tmp_path / "out"))
    assert archived.num_rows == summary["clean"]
    assert len(set(archived.column("event_id").to_pylist())) == archived.num_rows


def test_a_poller_restored_from_a_checkpoint_continues_exactly(kinesis):
    """What the splittable DoFn does when its residual resumes on another worker."""
    _create(kinesis.endpoint, "resume", 2)
    _write(kinesis.endpoint, "resume", 0, 200)
    first = KinesisPoller("resume", "us-east-1", kinesis.endpoint, max_records=30)
    first.open()
    read = _drain(first, 60)
    state = first.checkpoint()
    resumed = KinesisPoller("resume", "us-east-1", kinesis.endpoint)
    resumed.restore(state)
    resumed.open()
    rest = _drain(resumed, 200 - len(read))
    rest += _drain(resumed, 1, timeout_s=0.5)
    assert sorted(e for _, e, _ in read + rest) == sorted(f"e{i}" for i in range(200))
    assert len(read) + len(rest) == 200


@pytest.mark.slow
def test_splittable_dofn_form_reads_everything_on_the_fn_api_runner(kinesis):
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.testing.util import assert_that, equal_to

    from beam_rtbf.sources.polling import ReadFromPoller, ReadPacing

    _create(kinesis.endpoint, "sdf", 2)
    _write(kinesis.endpoint, "sdf", 0, 150)
    source_kwargs = {
        "stream": "sdf",
        "region": "us-east-1",
        "endpoint": kinesis.endpoint,
        "max_records": 20,
        "idle_stop_s": 1.0,
    }
    with beam.Pipeline(runner=FnApiRunner()) as p:
        ids = (
            p
            | ReadFromPoller(lambda: KinesisPoller(**source_kwargs), ReadPacing(poll_interval_s=0.05, polls_per_call=3))
            | beam.FlatMap(lambda raw: [json.loads(line)["event_id"] for line in raw.data.splitlines()])
        )
        assert_that(ids, equal_to([f"e{i}" for i in range(150)]))


def test_kpl_aggregated_record_becomes_one_session_per_user_record(kinesis):
    """100 user records put as one KPL aggregate, then a corrupt aggregate: 100 sessions and one dead letter."""
    from beam_rtbf.parse.session_batch import parse_session_chunk
    from beam_rtbf.sources.kpl import aggregate
    from tests.adversarial import kpl_bad_md5

    _create(kinesis.endpoint, "kpl", 1)
    client = kinesis_client("us-east-1", kinesis.endpoint)
    users = [(f"k{i}", json.dumps({"user_id": f"u{i}", "event_id": f"e{i}"}).encode()) for i in range(100)]
    good = client.put_record(StreamName="kpl", Data=aggregate(users), PartitionKey="agg")
    bad = client.put_record(StreamName="kpl", Data=kpl_bad_md5(), PartitionKey="agg")
    poller = KinesisPoller("kpl", "us-east-1", kinesis.endpoint)
    poller.open()
    raws = []
    deadline = time.monotonic() + 20
    while len(raws) < 2 and time.monotonic() < deadline:
        raws += [raw for raw, _ in poller.poll().elements]
        time.sleep(0.02)
    poller.close()
    parsed = [parse_session_chunk(raw) for raw in raws]
    sessions = [row for p in parsed for row in p.batch.to_pylist()]
    dead = [d for p in parsed for d in p.dead_letters]
    source = f"kinesis://kpl/{good['ShardId']}"
    assert [s["event_id"] for s in sessions] == [f"e{i}" for i in range(100)]
    assert list(raws[0].positions) == [f"{source}@{good['SequenceNumber']}:{i}" for i in range(100)]
    assert [(d.reason, d.position) for d in dead] == [
        ("bad KPL aggregate: MD5 checksum mismatch", f"{source}@{bad['SequenceNumber']}")
    ]
    assert sum(p.records_in for p in parsed) == 101


SEEN: list[tuple[str, str, str]] = []  # (shard, event id, key) in the order the read emitted them


def _record_seen(raw) -> None:
    shard = raw.source.rsplit("/", 1)[1]
    for line in raw.data.splitlines():
        record = json.loads(line)
        SEEN.append((shard, record["event_id"], record.get("key", "")))


def _write_keyed(endpoint: str, name: str, start: int, count: int, keys: int) -> None:
    records = [
        json.dumps({"user_id": f"u{i % 50}", "event_id": f"e{i}", "key": f"k{i % keys}"}).encode()
        for i in range(start, start + count)
    ]
    writer = KinesisWriter(name, "us-east-1", endpoint)
    assert writer.write(records, [f"k{i % keys}" for i in range(start, start + count)]) == count


def _sharded_read(stream: str, endpoint: str, trace, **extra):
    """The sharded splittable-DoFn read of ``stream`` on the FnApiRunner, recording what it emits."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from beam_rtbf.sources import source_for

    params = "&".join(f"{k}={v}" for k, v in {"region": "us-east-1", "endpoint": endpoint, **extra}.items())
    source = source_for(f"kinesis://{stream}?{params}", "sessions")
    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = p | source.streaming_read(str(trace)) | beam.Map(_record_seen)
    return [json.loads(line) for line in trace.read_text().splitlines()] if trace.exists() else []


@pytest.mark.slow
def test_sharded_read_gives_each_of_four_shards_a_restriction_and_reads_every_record_once(
    kinesis, tmp_path, monkeypatch
):
    trace = tmp_path / "trace.jsonl"
    _create(kinesis.endpoint, "four", 4)
    _write_keyed(kinesis.endpoint, "four", 0, 400, keys=40)
    SEEN.clear()
    calls = _sharded_read("four", kinesis.endpoint, trace, max_records=25, idle_stop_s=1.5)
    assert sorted(e for _, e, _ in SEEN) == sorted(f"e{i}" for i in range(400))  # each once
    shards = {f"shardId-00000000000{i}" for i in range(4)}
    assert {s for s, _, _ in SEEN} == shards
    assert {c["root"] for c in calls} == shards  # four restrictions, one root each
    assert sum(c["rows"] for c in calls) == 400


@pytest.mark.slow
def test_sharded_read_across_a_split_loses_nothing_duplicates_nothing_and_keeps_per_key_order(
    kinesis, tmp_path, monkeypatch
):
    """Shard 0 of 4 is split while its reader is behind: its children are read by the same
    restriction after shard 0's end, so every key's records come out in write order."""
    import threading

    trace = tmp_path / "trace.jsonl"
    _create(kinesis.endpoint, "reshard", 4)
    _write_keyed(kinesis.endpoint, "reshard", 0, 400, keys=40)
    SEEN.clear()
    result: dict = {}
    reader = threading.Thread(
        target=lambda: result.update(
            calls=_sharded_read(
                "reshard", kinesis.endpoint, trace, max_records=10, idle_stop_s=4, discovery_interval_s=0.3
            )
        )
    )
    reader.start()
    deadline = time.monotonic() + 60
    while len(SEEN) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    parent = "shardId-000000000000"
    unread_in_parent = 100 - sum(1 for s, _, _ in SEEN if s == parent)
    client = kinesis_client("us-east-1", kinesis.endpoint)
    client.split_shard(StreamName="reshard", ShardToSplit=parent, NewStartingHashKey=str(2**128 // 8))
    for _ in range(200):
        if client.describe_stream(StreamName="reshard")["StreamDescription"]["StreamStatus"] == "ACTIVE":
            break
        time.sleep(0.05)
    _write_keyed(kinesis.endpoint, "reshard", 400, 400, keys=40)  # the same keys: shard 0's now go to its children
    reader.join(timeout=120)
    assert not reader.is_alive()
    assert unread_in_parent > 0, "the parent was read before the split: nothing tested"
    assert sorted(e for _, e, _ in SEEN) == sorted(f"e{i}" for i in range(800))  # nothing lost or doubled
    children = {s for s, _, _ in SEEN} - {f"shardId-00000000000{i}" for i in range(4)}
    assert len(children) == 2
    order = {e: n for n, (_, e, _) in enumerate(SEEN)}
    parent_last = max(order[e] for s, e, _ in SEEN if s == parent)
    assert min(order[e] for s, e, _ in SEEN if s in children) > parent_last  # children after the parent's end
    for key in {k for _, _, k in SEEN}:
        numbers = [int(e[1:]) for _, e, k in SEEN if k == key]
        assert numbers == sorted(numbers), key  # per key: write order, across the split
    roots = {c["root"] for c in result["calls"]}
    assert roots == {f"shardId-00000000000{i}" for i in range(4)}  # the children stayed with shard 0's reader
