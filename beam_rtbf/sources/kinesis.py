"""``kinesis://STREAM?region=...&endpoint=...``: a Kinesis reader that behaves like the KCL where it matters.

    kinesis://sessions?region=eu-west-1                         (credentials from the usual AWS chain)
    kinesis://events?region=us-east-1&start=TRIM_HORIZON&checkpoint=/var/lib/rtbf/events.json
    kinesis://events?start=AT_TIMESTAMP&at=2026-01-01T00:00:00Z

What it does (the second seed's problems: unknown and changing shard counts,
knowing what was already processed):

- discovers shards at start and every ``discovery_interval_s``;
- after a split or merge, reads a child only once all its parents are read to
  their end, and the child from TRIM_HORIZON, so per-key order holds;
- remembers the last sequence number per shard; with ``checkpoint=PATH`` it
  persists them (as of the previous poll: at-least-once) and a restart resumes
  after them, losing nothing;
- backs off exponentially with jitter per shard on ProvisionedThroughputExceeded
  and transient errors, without stalling the other shards;
- renews expired iterators from the last sequence number;
- holds the watermark at the oldest unread arrival time; idle, caught-up shards
  advance it to now;
- with ``idle_stop_s=N`` ends once every shard is caught up and idle for N
  seconds (a replay that finishes; tests and backfills);
- de-aggregates KPL aggregated records (``kpl.py``): each user record is one
  record at position ``kinesis://STREAM/SHARD@SEQUENCE:SUBSEQUENCE``; a corrupt
  aggregate (bad MD5 or protobuf) is one dead letter with its raw bytes.

One reader core (``KinesisPoller``) serves both streaming forms through
``ReadFromPoller``. On portable runners the read is split per lineage root
(``KinesisShards``): every shard listed at the start (and any later shard with
no known parent) is a restriction of its own, read by ``KinesisPoller(roots=
[shard])``, which also reads every descendant whose first known parent it
reads, after that parent's SHARD_END (see ``beam_rtbf.sources.polling``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from typing import Any

import apache_beam as beam

from beam_rtbf.records import RawBatch, now_ms, parse_time_ms
from beam_rtbf.sources import kpl
from beam_rtbf.sources.base import Poller, PollResult, Source
from beam_rtbf.sources.poller import ShardedPollers, ShardInfo, owner
from beam_rtbf.sources.spec import SourceSpec

__all__ = ["KinesisSource", "KinesisPoller", "KinesisShards", "KinesisWriter", "kinesis_client", "list_shards"]

_LOGGER = logging.getLogger(__name__)
_STARTS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
_THROTTLED = ("ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException")
_TRANSIENT = ("InternalFailure", "ServiceUnavailable", "KMSThrottlingException")


def kinesis_client(region: str | None, endpoint: str | None):
    import boto3
    from botocore.config import Config

    # A session per client: boto3's default session is shared, caches credentials, and is not thread-safe.
    return boto3.session.Session().client(
        "kinesis",
        region_name=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        endpoint_url=endpoint,
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=10),
    )


def _error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""


def list_shards(client, stream: str) -> list[ShardInfo]:
    """Every shard ListShards returns now, with its listed parents and whether it is closed;
    a missing stream or refused credentials as one clear ``ValueError``."""
    from botocore.exceptions import ClientError, NoCredentialsError

    try:
        shards, token = [], None
        while True:
            kwargs = {"NextToken": token} if token else {"StreamName": stream}
            page = client.list_shards(**kwargs)
            shards += page["Shards"]
            token = page.get("NextToken")
            if not token:
                break
    except NoCredentialsError as exc:
        raise ValueError(f"kinesis://{stream}: no AWS credentials found ({exc})") from exc
    except ClientError as exc:
        code = _error_code(exc)
        if code == "ResourceNotFoundException":
            raise ValueError(f"kinesis://{stream}: stream does not exist ({exc})") from exc
        if code in ("UnrecognizedClientException", "InvalidSignatureException", "AccessDeniedException"):
            raise ValueError(f"kinesis://{stream}: credentials refused ({code}: {exc})") from exc
        raise
    return [
        ShardInfo(
            shard["ShardId"],
            tuple(p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p),
            "EndingSequenceNumber" in shard.get("SequenceNumberRange", {}),
        )
        for shard in shards
    ]


@dataclasses.dataclass
class _Shard:
    shard_id: str
    parents: tuple[str, ...]
    last_seq: str | None = None
    iterator: str | None = None
    finished: bool = False
    retry_at: float = 0.0
    failures: int = 0
    last_arrival_ms: int = 0
    caught_up: bool = False


class KinesisPoller(Poller):
    """Reads every shard of a stream in lineage order; see the module docstring."""

    def __init__(
        self,
        stream: str,
        region: str | None = None,
        endpoint: str | None = None,
        start: str = "TRIM_HORIZON",
        at_timestamp_ms: int | None = None,
        checkpoint_path: str | None = None,
        discovery_interval_s: float = 10.0,
        max_records: int = 10_000,
        max_backoff_s: float = 5.0,
        idle_stop_s: float | None = None,
        roots: list[str] | None = None,
        added: bool = False,
    ) -> None:
        """``roots``: read only these shards and their descendants (one restriction's share);
        ``added``: they appeared while the read was running, so each is read from TRIM_HORIZON."""
        if start not in _STARTS:
            raise ValueError(f"kinesis start must be one of {_STARTS}, not {start!r}")
        if start == "AT_TIMESTAMP" and at_timestamp_ms is None:
            raise ValueError("kinesis start=AT_TIMESTAMP needs at=<RFC 3339 time>")
        self.stream = stream
        self.region = region
        self.endpoint = endpoint
        self.start = start
        self.at_timestamp_ms = at_timestamp_ms
        self.checkpoint_path = checkpoint_path
        self.discovery_interval_s = discovery_interval_s
        self.max_records = max_records
        self.max_backoff_s = max_backoff_s
        self._client = None
        self._shards: dict[str, _Shard] = {}
        self._discovered_at = 0.0
        self._pending_checkpoint: dict | None = None
        self._throttled = 0
        self.idle_stop_s = idle_stop_s
        self._last_data = time.monotonic()
        self._restored: dict = {}
        self.roots = None if roots is None else tuple(roots)
        self.added = added
        self._known: set[str] = set()  # every shard id listed so far (ownership of children)

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        self._client = kinesis_client(self.region, self.endpoint)
        saved = self._load_checkpoint()
        if self.roots is not None:  # a restriction's share: its own file entries over the stream's
            saved.update(self._load_checkpoint(self._shard_checkpoint_path()))
        self._discover()
        if self.roots is not None:
            saved = {k: v for k, v in saved.items() if k in self._shards}
        saved.update(self._restored)
        for shard_id, state in saved.items():
            shard = self._shards.setdefault(shard_id, _Shard(shard_id, tuple(state.get("parents", ()))))
            shard.last_seq = state.get("last_seq")
            shard.finished = bool(state.get("finished"))

    def close(self) -> None:
        self._write_checkpoint(self.checkpoint())
        self._client = None

    def check(self) -> None:
        self._client = kinesis_client(self.region, self.endpoint)
        self._discover()  # describes the stream: missing stream / bad credentials raise here
        self._client = None

    # -- shards ---------------------------------------------------------------------------

    def _discover(self) -> None:
        listed = list_shards(self._client, self.stream)
        self._known |= {s.shard_id for s in listed}
        if self.roots is None:
            mine = listed
        else:  # the roots, and each shard whose first known parent is ours
            owned = set(self.roots) | set(self._shards)
            for _ in range(len(listed)):  # to a fixed point, whatever the listing order
                grown = [s for s in listed if s.shard_id not in owned and owner(s, self._known) in owned]
                if not grown:
                    break
                owned |= {s.shard_id for s in grown}
            mine = [s for s in listed if s.shard_id in owned]
        for shard in mine:
            if shard.shard_id not in self._shards:
                self._shards[shard.shard_id] = _Shard(shard.shard_id, shard.parents)
        self._discovered_at = time.monotonic()

    def _readable(self, shard: _Shard) -> bool:
        """Not finished, and every parent we know of read to its end (a parent that expired
        out of retention is not listed any more, and cannot hold its children back)."""
        return not shard.finished and all(self._shards[p].finished for p in shard.parents if p in self._shards)

    def _iterator_for(self, shard: _Shard) -> str:
        args: dict[str, Any] = {"StreamName": self.stream, "ShardId": shard.shard_id}
        if shard.last_seq is not None:
            args.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=shard.last_seq)
        elif any(p in self._shards for p in shard.parents) or self.added:
            args.update(ShardIteratorType="TRIM_HORIZON")  # a child (after its parents), or added while running
        elif self.start == "AT_TIMESTAMP":
            args.update(ShardIteratorType="AT_TIMESTAMP", Timestamp=self.at_timestamp_ms / 1000)
        else:
            args.update(ShardIteratorType=self.start)
        return self._client.get_shard_iterator(**args)["ShardIterator"]

    # -- polling ----------------------------------------------------------------------------

    def poll(self) -> PollResult:
        from botocore.exceptions import ClientError, EndpointConnectionError

        if self._pending_checkpoint is not None:
            # What the previous poll emitted has been handed to the runner: persist it.
            self._write_checkpoint(self._pending_checkpoint)
        if time.monotonic() - self._discovered_at >= self.discovery_interval_s:
            self._discover()
        elements: list[tuple[Any, int]] = []
        now = time.monotonic()
        for shard in list(self._shards.values()):
            if not self._readable(shard) or shard.retry_at > now:
                continue
            try:
                if shard.iterator is None:
                    shard.iterator = self._iterator_for(shard)
                reply = self._client.get_records(ShardIterator=shard.iterator, Limit=self.max_records)
            except ClientError as exc:
                code = _error_code(exc)
                if code == "ExpiredIteratorException":
                    shard.iterator = None  # renewed from last_seq on the next poll
                    continue
                if code in _THROTTLED or code in _TRANSIENT:
                    self._back_off(shard, code)
                    continue
                raise
            except EndpointConnectionError as exc:
                self._back_off(shard, str(exc))
                continue
            shard.failures = 0
            records = reply.get("Records", [])
            if records:
                elements.extend(self._batch(shard, records))
            shard.caught_up = not records and reply.get("MillisBehindLatest", 1) == 0
            shard.iterator = reply.get("NextShardIterator")
            if shard.iterator is None:
                shard.finished = True  # closed by a split or merge and read to its end
                _LOGGER.info("kinesis %s: shard %s finished; its children may start", self.stream, shard.shard_id)
        self._pending_checkpoint = self.checkpoint()
        if elements:
            self._last_data = time.monotonic()
        idle = all(s.caught_up or s.finished or not self._readable(s) for s in self._shards.values())
        done = (
            self.idle_stop_s is not None
            and idle
            and not elements
            and time.monotonic() - self._last_data >= self.idle_stop_s
        )
        return PollResult(elements, self._watermark(), done=done)

    def _back_off(self, shard: _Shard, why: str) -> None:
        shard.failures += 1
        self._throttled += 1
        delay = random.uniform(0, min(self.max_backoff_s, 0.05 * 2**shard.failures))
        shard.retry_at = time.monotonic() + delay
        _LOGGER.warning("kinesis %s/%s: %s; backing off %.2fs", self.stream, shard.shard_id, why, delay)

    def _batch(self, shard: _Shard, records: list[dict]) -> list[tuple[RawBatch, int]]:
        """One RawBatch of the shard's records (KPL aggregates de-aggregated, one user record
        per line, position ``...@SEQUENCE:SUBSEQUENCE``), plus one per corrupt aggregate,
        whose ``error`` makes it a dead letter."""
        source = f"kinesis://{self.stream}/{shard.shard_id}"
        lines, positions, arrivals, corrupt = [], [], [], []
        for record in records:
            stamp = record.get("ApproximateArrivalTimestamp")
            arrival = int(stamp.timestamp() * 1000) if stamp is not None else now_ms()
            arrivals.append(arrival)
            position = f"{source}@{record['SequenceNumber']}"
            data = record["Data"]
            if not kpl.is_aggregated(data):
                lines.append(data.replace(b"\r", b" ").replace(b"\n", b" "))  # one record per line
                positions.append(position)
                continue
            try:
                user_records = kpl.deaggregate(data)
            except kpl.KplError as exc:
                corrupt.append((RawBatch(source, "jsonl", data, 0, (position,), arrival, error=str(exc)), arrival))
                continue
            for sub, user_record in enumerate(user_records):
                lines.append(user_record.data.replace(b"\r", b" ").replace(b"\n", b" "))
                positions.append(f"{position}:{sub}")
        shard.last_seq = records[-1]["SequenceNumber"]
        shard.last_arrival_ms = max(arrivals)
        out = corrupt
        if lines:
            raw = RawBatch(source, "jsonl", b"\n".join(lines) + b"\n", 0, tuple(positions), max(arrivals))
            out = [(raw, min(arrivals)), *corrupt]
        return out

    def _watermark(self) -> int:
        active = [s for s in self._shards.values() if self._readable(s)]
        if not active:
            return now_ms()
        return min(now_ms() if s.caught_up else s.last_arrival_ms for s in active)

    # -- checkpoints --------------------------------------------------------------------------

    def restore(self, state: dict) -> None:
        self._restored = dict(state)

    def checkpoint(self) -> dict[str, dict]:
        return {
            s.shard_id: {"last_seq": s.last_seq, "finished": s.finished, "parents": list(s.parents)}
            for s in self._shards.values()
            if s.last_seq is not None or s.finished
        }

    @property
    def throttled(self) -> int:
        return self._throttled

    def _shard_checkpoint_path(self) -> str | None:
        """A restriction's own file beside the stream's (``PATH.ROOT``): readers of other roots never write it."""
        if not self.checkpoint_path or self.roots is None:
            return self.checkpoint_path
        return f"{self.checkpoint_path}.{'+'.join(self.roots)}"

    def _load_checkpoint(self, path: str | None = None) -> dict:
        path = path or self.checkpoint_path
        if not path or not os.path.exists(path):
            return {}
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
        if saved.get("stream") != self.stream:
            raise ValueError(f"checkpoint {path} is for stream {saved.get('stream')!r}")
        return saved["shards"]

    def _write_checkpoint(self, shards: dict) -> None:
        path = self._shard_checkpoint_path()
        if not path:
            return
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"stream": self.stream, "shards": shards}, handle)
        os.replace(tmp, path)


class KinesisShards(ShardedPollers):
    """The stream's lineage roots as units of work, each read by ``KinesisPoller(roots=[shard])``."""

    def __init__(self, kwargs: dict) -> None:
        self.kwargs = dict(kwargs)
        self.discovery_interval_s = kwargs.get("discovery_interval_s", 10.0)
        self.idle_stop_s = kwargs.get("idle_stop_s")
        self._client = None

    def discover(self) -> list[ShardInfo]:
        if self._client is None:
            self._client = kinesis_client(self.kwargs.get("region"), self.kwargs.get("endpoint"))
        return list_shards(self._client, self.kwargs["stream"])

    def poller_for(self, roots: list[str], added: bool = False) -> KinesisPoller:
        return KinesisPoller(**self.kwargs, roots=roots, added=added)

    def close(self) -> None:
        self._client = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}


class KinesisWriter:
    """PutRecords in batches of up to 500, retrying throttled or failed entries with backoff."""

    def __init__(self, stream: str, region: str | None = None, endpoint: str | None = None) -> None:
        self.stream = stream
        self._client = kinesis_client(region, endpoint)

    def write(self, records: list[bytes], keys: list[str]) -> int:
        from botocore.exceptions import ClientError

        pending = list(zip(records, keys))
        written = 0
        while pending:
            chunk, pending = pending[:500], pending[500:]
            attempt = 0
            while chunk:
                try:
                    reply = self._client.put_records(
                        StreamName=self.stream, Records=[{"Data": d, "PartitionKey": k} for d, k in chunk]
                    )
                except ClientError as exc:
                    if _error_code(exc) not in _THROTTLED or attempt >= 8:
                        raise
                    failed = chunk
                else:
                    failed = [entry for entry, result in zip(chunk, reply["Records"]) if "ErrorCode" in result]
                    written += len(chunk) - len(failed)
                chunk = failed
                if chunk:
                    attempt += 1
                    time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))
        return written


class KinesisSource(Source):
    scheme = "kinesis"
    PARAMS = ("region", "endpoint", "start", "at", "checkpoint", "idle_stop_s", "max_records", "discovery_interval_s")

    def __init__(self, spec: SourceSpec, stream: str) -> None:
        super().__init__(spec, stream)
        self.stream_name = spec.location.strip("/")
        if not self.stream_name:
            raise ValueError(f"source {spec.uri!r} names no stream: kinesis://STREAM?region=...")
        at = spec.get_str("at")
        self.kwargs = {
            "stream": self.stream_name,
            "region": spec.get_str("region"),
            "endpoint": spec.get_str("endpoint"),
            "start": spec.get_str("start", "TRIM_HORIZON").upper(),
            "at_timestamp_ms": parse_time_ms(at) if at else None,
            "checkpoint_path": spec.get_str("checkpoint"),
            "discovery_interval_s": spec.get_float("discovery_interval_s", 10.0),
            "max_records": spec.get_int("max_records", 10_000),
            "idle_stop_s": spec.get_float("idle_stop_s"),
        }
        KinesisPoller(**self.kwargs)  # validates the options now, before a graph is built

    @property
    def bounded(self) -> bool:
        return False

    def read(self) -> beam.PTransform:
        raise ValueError(f"{self.spec.uri} is a stream; it is read in streaming mode")

    def poller(self) -> Poller:
        return KinesisPoller(**self.kwargs)

    def shards(self) -> KinesisShards:
        return KinesisShards(self.kwargs)
