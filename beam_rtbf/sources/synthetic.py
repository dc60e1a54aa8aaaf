"""``synthetic://`` sources: a seeded generator of sessions and erasure requests.

    synthetic://sessions?users=100000&sessions=1000000&seed=1     bounded
    synthetic://sessions?users=1000&rate=20000&duration_s=30      unbounded (rate per second)
    synthetic://requests?users=100000&requests=500&seed=1         bounded
    synthetic://requests?users=1000&request_rate=2                unbounded
    synthetic://sessions?rate=20000&duration_s=30&shards=4        unbounded, 4 units of work

Unbounded sessions given ``shards=N`` are N generators of ``rate/N`` each, every one a
unit of work of its own (``SyntheticShards``: a restriction per shard on portable runners).

Sessions and requests built with the same ``seed`` and ``users`` share one user
space, so a run's forgotten subjects are known in advance (``planned_requests``).
Batches are built with numpy and Arrow, never one Python object per session.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa

from beam_rtbf.records import SESSION_SCHEMA, ErasureRequest, RawBatch, iso_ms, now_ms, parse_time_ms
from beam_rtbf.sources.base import Poller, PollResult, Source
from beam_rtbf.sources.poller import ShardedPollers, ShardInfo
from beam_rtbf.sources.spec import SourceSpec

__all__ = [
    "SyntheticConfig",
    "SyntheticSource",
    "session_batches",
    "planned_requests",
    "bad_session_lines",
    "expected_live_sessions",
    "live_session_count",
    "live_requests",
]

ACTIONS = (
    "show",
    "search_results",
    "personalize",
    "index",
    "search",
    "ajax_refresh_subtotal",
    "update",
    "similar_listings",
    "social_connections",
    "reviews",
)
ACTION_TYPES = ("view", "click", "data", "submit", "message_post", "booking_request")
ACTION_DETAILS = ("view_search_results", "p3", "wishlist_content_update", "user_profile", "change_trip_characteristics")
DEVICE_TYPES = ("Mac Desktop", "Windows Desktop", "iPhone", "Android Phone", "iPad Tablet", "Linux Desktop")
DEFAULT_START = "2026-01-01T00:00:00Z"


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Generator parameters; ``sessions=None`` (sessions) or ``requests=None`` with a rate means unbounded."""

    users: int = 100_000
    sessions: int | None = None
    requests: int | None = None
    rate: float = 10_000.0  # sessions per second, unbounded mode
    request_rate: float = 1.0  # requests per second, unbounded mode
    seed: int = 1
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    span_s: int = 86_400  # bounded: event times spread over this span from start
    bad_rate: float = 0.0  # share of extra malformed session records
    batch_rows: int = 65_536
    max_delay_ms: int = 0  # unbounded: event time lags arrival by up to this
    duration_s: float | None = None  # unbounded: stop after this long
    shards: int = 4  # bounded: parallel generator shards; unbounded sessions: units of work if given
    active_users: int | None = None  # unbounded requests pick among the first N users

    @classmethod
    def from_spec(cls, spec: SourceSpec) -> SyntheticConfig:
        """The generator a ``synthetic://`` URI describes (``SyntheticSource`` has refused unknown names)."""
        start = spec.get_str("start", DEFAULT_START)
        cfg = cls(
            users=spec.get_int("users", cls.users),
            sessions=spec.get_int("sessions"),
            requests=spec.get_int("requests"),
            rate=spec.get_float("rate", cls.rate),
            request_rate=spec.get_float("request_rate", cls.request_rate),
            seed=spec.get_int("seed", cls.seed),
            start_ms=parse_time_ms(start),
            span_s=spec.get_int("span_s", cls.span_s),
            bad_rate=spec.get_float("bad_rate", cls.bad_rate),
            batch_rows=spec.get_int("batch_rows", cls.batch_rows),
            max_delay_ms=spec.get_int("max_delay_ms", cls.max_delay_ms),
            duration_s=spec.get_float("duration_s"),
            shards=spec.get_int("shards", cls.shards),
            active_users=spec.get_int("active_users"),
        )
        cfg.validate(spec.uri)
        return cfg

    def validate(self, uri: str = "synthetic://") -> None:
        problems = []
        if self.users < 1:
            problems.append("users must be >= 1")
        if self.sessions is not None and self.sessions < 0:
            problems.append("sessions must be >= 0")
        if self.requests is not None and not 0 <= self.requests <= self.users:
            problems.append("requests must be between 0 and users")
        if self.rate <= 0 or self.request_rate < 0:
            problems.append("rate must be > 0 and request_rate >= 0")
        if not 0 <= self.bad_rate < 1:
            problems.append("bad_rate must be in [0, 1)")
        if self.batch_rows < 1 or self.shards < 1 or self.span_s < 1:
            problems.append("batch_rows, shards and span_s must be >= 1")
        if problems:
            raise ValueError(f"source {uri!r}: " + "; ".join(problems))


_USER_CACHE: dict[int, pa.Array] = {}


def user_id_array(users: int) -> pa.Array:
    """``u0000000 .. u{users-1}``, built once per size."""
    if users not in _USER_CACHE:
        _USER_CACHE[users] = pa.array([f"u{i:07d}" for i in range(users)], type=pa.string())
    return _USER_CACHE[users]


def _vocab(values: tuple[str, ...], rng: np.random.Generator, n: int) -> pa.Array:
    return pa.array(values, type=pa.string()).take(pa.array(rng.integers(0, len(values), n)))


def make_session_batch(
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    event_times_ms: np.ndarray,
    id_prefix: str,
    users: np.ndarray | None = None,
    first_id: int = 0,
) -> pa.RecordBatch:
    """``len(event_times_ms)`` sessions with ids ``id_prefix + (first_id + i)``; users drawn if not given."""
    n = len(event_times_ms)
    if users is None:
        # Zipf-like skew: a few heavy users, a long tail, like real clickstreams.
        users = np.minimum((rng.pareto(1.2, n) * cfg.users / 20).astype(np.int64), cfg.users - 1)
        users = (users * 2654435761 + cfg.seed) % cfg.users
    secs = rng.exponential(600.0, n)
    secs_arr = pa.array(secs, mask=rng.random(n) < 0.02)
    event_ids = pa.array(np.arange(first_id, first_id + n, dtype=np.int64)).cast(pa.string())
    event_ids = pa.compute.binary_join_element_wise(id_prefix, event_ids, "")
    return pa.RecordBatch.from_arrays(
        [
            user_id_array(cfg.users).take(pa.array(users)),
            pa.array(event_times_ms.astype(np.int64)),
            _vocab(ACTIONS, rng, n),
            _vocab(ACTION_TYPES, rng, n),
            _vocab(ACTION_DETAILS, rng, n),
            _vocab(DEVICE_TYPES, rng, n),
            secs_arr,
            event_ids,
            pa.nulls(n, pa.string()),
            pa.nulls(n, pa.string()),
        ],
        schema=SESSION_SCHEMA,
    )


def bad_session_lines(rng: np.random.Generator, n: int) -> list[bytes]:
    """A mix of the malformed records real streams carry."""
    kinds = [
        b'{"user_id": "u1", "secs_elapsed": ',  # truncated JSON
        b'{"action": "show", "secs_elapsed": 3.0}',  # missing user_id
        b'{"user_id": "u2", "event_time": "not-a-time"}',  # bad time
        b'{"user_id": "u3", "secs_elapsed": -5}',  # negative duration
        b'{"user_id": "u4", "secs_elapsed": "fast"}',  # non-numeric duration
        b'{"user_id": "u5\xff\xfe", "action": "show"}',  # bad UTF-8
        b"[1, 2, 3]",  # not an object
    ]
    return [kinds[int(k)] for k in rng.integers(0, len(kinds), n)]


def session_batches(cfg: SyntheticConfig, shard: int) -> Iterator[pa.RecordBatch | RawBatch]:
    """Shard ``shard`` of a bounded generated run, in batches of ``batch_rows``."""
    assert cfg.sessions is not None
    rng = np.random.default_rng([cfg.seed, shard])
    per_shard = cfg.sessions // cfg.shards + (1 if shard < cfg.sessions % cfg.shards else 0)
    produced = 0
    index = 0
    while produced < per_shard:
        n = min(cfg.batch_rows, per_shard - produced)
        times = np.sort(cfg.start_ms + rng.integers(0, cfg.span_s * 1000, n))
        yield make_session_batch(cfg, rng, times, f"s{cfg.seed}-{shard}-{index}-")
        n_bad = int(rng.binomial(n, cfg.bad_rate)) if cfg.bad_rate else 0
        if n_bad:
            data = b"\n".join(bad_session_lines(rng, n_bad)) + b"\n"
            yield RawBatch(f"synthetic://sessions/{shard}/{index}", "jsonl", data, 0, None, now_ms())
        produced += n
        index += 1


def planned_requests(cfg: SyntheticConfig) -> list[ErasureRequest]:
    """The bounded generator's requests: ``requests`` distinct subjects, deterministic by seed."""
    count = cfg.requests or 0
    rng = np.random.default_rng([cfg.seed, 999_983])
    subjects = rng.permutation(cfg.users)[:count]
    ids = user_id_array(cfg.users)
    times = np.sort(cfg.start_ms + rng.integers(0, cfg.span_s * 1000, count))
    return [
        ErasureRequest(
            request_id=f"req-{cfg.seed}-{k}",
            subject_id=ids[int(s)].as_py(),
            requested_at_ms=int(t),
            regulation="ccpa" if k % 4 == 3 else "gdpr",
        )
        for k, (s, t) in enumerate(zip(subjects, times))
    ]


def request_lines(requests: list[ErasureRequest]) -> bytes:
    return b"".join(json.dumps(r.to_dict(), sort_keys=True).encode() + b"\n" for r in requests)


class _GenerateShard(beam.DoFn):
    def __init__(self, cfg: SyntheticConfig) -> None:
        self._cfg = cfg

    def process(self, shard: int) -> Iterator[pa.RecordBatch | RawBatch]:
        yield from session_batches(self._cfg, shard)


class ReadSyntheticSessions(beam.PTransform):
    """Bounded generated sessions, generated in ``shards`` parallel pieces."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        super().__init__()
        self._cfg = cfg

    def expand(self, pbegin):
        return (
            pbegin
            | "Shards" >> beam.Create(list(range(self._cfg.shards)))
            | "SpreadShards" >> beam.Reshuffle()
            | "GenerateSessions" >> beam.ParDo(_GenerateShard(self._cfg))
        )


class ReadSyntheticRequests(beam.PTransform):
    """Bounded generated requests, as JSON lines (so they take the real parsing path)."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        super().__init__()
        self._cfg = cfg

    def expand(self, pbegin):
        data = request_lines(planned_requests(self._cfg))
        return pbegin | "GenerateRequests" >> beam.Create(
            [RawBatch("synthetic://requests", "jsonl", data, 0, None, 0)] if data else []
        )


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """A 64-bit mix of each value (splitmix64's finaliser): a counter-based random stream."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def live_users(cfg: SyntheticConfig, stream_key: int, seqs: np.ndarray) -> np.ndarray:
    """The user of each live session number: a function of (seed, generator, number) alone, with
    the same Zipf-like skew as the bounded generator (a Lomax draw by inverse transform)."""
    with np.errstate(over="ignore"):
        salt = _splitmix64(np.array([cfg.seed * 1_000_003 + stream_key], dtype=np.uint64))[0]
        mixed = _splitmix64(seqs.astype(np.uint64) ^ salt)
    uniform = (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    lomax = (1.0 - uniform) ** (-1.0 / 1.2) - 1.0
    users = np.minimum((lomax * cfg.users / 20).astype(np.int64), cfg.users - 1)
    return (users * 2654435761 + cfg.seed) % cfg.users


def live_session_count(cfg: SyntheticConfig, shards: int = 1) -> int | None:
    """How many sessions one live generator (of ``shards``) makes: ``rate/shards * duration_s``."""
    if cfg.duration_s is None:
        return None
    return int(round(cfg.rate / shards * cfg.duration_s))


def expected_live_sessions(cfg: SyntheticConfig, shards: int | None = None) -> dict[str, str]:
    """event_id -> user_id of every session a bounded-duration live run generates (``shards``: as in
    the URI, or None for one generator over the whole stream)."""
    expected: dict[str, str] = {}
    ids = user_id_array(cfg.users)
    for shard in range(shards) if shards else [None]:
        count = live_session_count(cfg, shards or 1)
        if count is None:
            raise ValueError("an unbounded generator (no duration_s) has no expected set")
        seqs = np.arange(count, dtype=np.int64)
        users = ids.take(pa.array(live_users(cfg, -1 if shard is None else shard, seqs))).to_pylist()
        prefix = f"live{cfg.seed}-" if shard is None else f"live{cfg.seed}-{shard}-"
        expected.update({f"{prefix}{n}": user for n, user in zip(seqs.tolist(), users)})
    return expected


def live_requests(cfg: SyntheticConfig) -> list[tuple[str, str]]:
    """(request_id, subject_id) of every request a bounded-duration live requests run makes."""
    if cfg.duration_s is None:
        raise ValueError("an unbounded generator (no duration_s) has no expected set")
    order = np.random.default_rng([cfg.seed, 11]).permutation(cfg.active_users or cfg.users)
    count = min(int(cfg.duration_s * cfg.request_rate), len(order))
    if cfg.requests is not None:
        count = min(count, cfg.requests)
    ids = user_id_array(cfg.users)
    return [(f"live-{cfg.seed}-{k}", ids[int(order[k])].as_py()) for k in range(count)]


class SyntheticSessionPoller(Poller):
    """Unbounded sessions at ``rate`` per second of wall time, event time ~ now.

    ``shard=k`` of ``shards=n``: one of n generators of ``rate/n`` each. Session number ``seq``
    of a generator is ``live<seed>[-<shard>]-<seq>`` and its user depends on (seed, generator,
    seq) only (``live_users``), so the sessions of a run are known in advance
    (``expected_live_sessions``) whatever its pace. ``checkpoint()`` is the next number: a read
    resumed from it (a runner's checkpoint, a Flink savepoint) goes on with the very next session,
    at the same rate from then on. With ``duration_s`` it makes ``rate * duration_s`` sessions and
    ends."""

    def __init__(self, cfg: SyntheticConfig, shard: int | None = None, shards: int = 1) -> None:
        self._total = live_session_count(cfg, shards if shard is not None else 1)
        if shard is not None:
            cfg = dataclasses.replace(cfg, rate=cfg.rate / shards)
        self._cfg = cfg
        self._key = -1 if shard is None else shard
        self._prefix = f"live{cfg.seed}-" if shard is None else f"live{cfg.seed}-{shard}-"
        self._last = 0.0
        self._seq = 0

    def restore(self, state: dict) -> None:
        self._seq = int(state.get("seq", 0))

    def checkpoint(self) -> dict:
        return {"seq": self._seq}

    def open(self) -> None:
        self._last = time.time()  # the pace starts now: a resumed read does not catch up its pause

    def poll(self) -> PollResult:
        now = time.time()
        cfg = self._cfg
        remaining = self._total - self._seq if self._total is not None else cfg.batch_rows
        n = min(int((now - self._last) * cfg.rate), cfg.batch_rows, remaining)
        elements = []
        if n > 0:
            rng = np.random.default_rng([cfg.seed, 7, self._key + 1, self._seq])
            # The span these n sessions cover at the offered rate: a capped poll (a job behind its
            # stream) leaves the rest as backlog with older times, as a real stream would.
            span_ms = max(1, int(n / cfg.rate * 1000))
            arrival = np.sort(int(self._last * 1000) + rng.integers(0, span_ms, n))
            delay = rng.integers(0, cfg.max_delay_ms + 1, n) if cfg.max_delay_ms else 0
            times = arrival - delay
            seqs = np.arange(self._seq, self._seq + n, dtype=np.int64)
            batch = make_session_batch(cfg, rng, times, self._prefix, live_users(cfg, self._key, seqs), self._seq)
            elements.append((batch, int(times.min())))
            self._last += n / cfg.rate
            self._seq += n
        watermark = int(self._last * 1000) - cfg.max_delay_ms
        return PollResult(elements, watermark, done=self._total is not None and self._seq >= self._total)


class SyntheticRequestPoller(Poller):
    """Unbounded requests at ``request_rate`` per second of run time, for subjects among the active users.

    Request ``k`` is ``live-<seed>-<k>`` for the k-th user of a seeded order; ``checkpoint()`` keeps
    how many were emitted and the run time they cover, so a resumed read goes on with the next one."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        self._cfg = cfg
        self._rng = np.random.default_rng([cfg.seed, 11])
        self._order = self._rng.permutation(cfg.active_users or cfg.users)
        self._started = 0.0
        self._emitted = 0
        self._elapsed_s = 0.0  # run time covered by the polls so far (before a restore too)

    def restore(self, state: dict) -> None:
        self._emitted = int(state.get("emitted", 0))
        self._elapsed_s = float(state.get("elapsed_s", 0.0))

    def checkpoint(self) -> dict:
        return {"emitted": self._emitted, "elapsed_s": self._elapsed_s}

    def open(self) -> None:
        self._started = time.time() - self._elapsed_s

    def poll(self) -> PollResult:
        now = time.time()
        cfg = self._cfg
        elapsed = now - self._started
        if cfg.duration_s is not None:
            elapsed = min(elapsed, cfg.duration_s)
        self._elapsed_s = elapsed
        due = min(int(elapsed * cfg.request_rate), len(self._order))
        if cfg.requests is not None:
            due = min(due, cfg.requests)
        ids = user_id_array(cfg.users)
        elements = []
        for k in range(self._emitted, due):
            at = int(now * 1000)
            request = ErasureRequest(f"live-{cfg.seed}-{k}", ids[int(self._order[k])].as_py(), at)
            raw = RawBatch("synthetic://requests", "jsonl", request_lines([request]), k, None, at)
            elements.append((raw, at))
        self._emitted = max(self._emitted, due)
        done = cfg.duration_s is not None and now - self._started >= cfg.duration_s
        return PollResult(elements, int(now * 1000), done=done)


class SyntheticShards(ShardedPollers):
    """``shards`` unbounded session generators, fixed for the run: discovery lists them once and ends."""

    discovery_interval_s = 0.1
    idle_stop_s = 0.0

    def __init__(self, cfg: SyntheticConfig) -> None:
        self.cfg = cfg

    def discover(self) -> list[ShardInfo]:
        return [ShardInfo(str(k)) for k in range(self.cfg.shards)]

    def poller_for(self, roots: list[str], added: bool = False) -> Poller:
        (root,) = roots
        return SyntheticSessionPoller(self.cfg, int(root), self.cfg.shards)


class SyntheticSource(Source):
    scheme = "synthetic"
    PARAMS = (
        "users",
        "sessions",
        "requests",
        "seed",
        "rate",
        "request_rate",
        "duration_s",
        "active_users",
        "start",
        "span_s",
        "bad_rate",
        "shards",
        "batch_rows",
        "max_delay_ms",
    )

    def __init__(self, spec: SourceSpec, stream: str) -> None:
        super().__init__(spec, stream)
        kind = spec.location.strip("/") or stream
        if kind != stream:
            raise ValueError(f"source {spec.uri!r} generates {kind}, but it was given as the {stream} input")
        self.cfg = SyntheticConfig.from_spec(spec)

    @property
    def bounded(self) -> bool:
        if self.stream == "sessions":
            return self.cfg.sessions is not None
        return self.cfg.requests is not None and "request_rate" not in self.spec.params

    def read(self) -> beam.PTransform:
        if not self.bounded:
            raise ValueError(f"{self.spec.uri} is unbounded; run it in streaming mode")
        if self.stream == "sessions":
            return ReadSyntheticSessions(self.cfg)
        return ReadSyntheticRequests(self.cfg)

    def poller(self) -> Poller:
        if self.stream == "sessions":
            return SyntheticSessionPoller(self.cfg)
        return SyntheticRequestPoller(self.cfg)

    def shards(self) -> SyntheticShards | None:
        """Unbounded sessions with ``shards=N`` in the URI: N units of work (else one, as before)."""
        if self.stream == "sessions" and not self.bounded and "shards" in self.spec.params:
            return SyntheticShards(self.cfg)
        return None

    def describe(self) -> dict:
        return {**super().describe(), "start": iso_ms(self.cfg.start_ms)}
