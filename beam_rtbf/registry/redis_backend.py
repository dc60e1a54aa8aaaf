"""Redis backend of the deletion registry (``redis://host:port/db``, TLS ``rediss://``).

Keys (all under ``prefix``, default ``{rtbf}``: the braces are a Redis Cluster
hash tag, so every key lives in one slot and the Lua scripts stay cluster-safe):

    {p}:version        INCR counter; grows by one per add that changed the set
    {p}:members        SET of forgotten ids (SMISMEMBER answers a batch in one round trip)
    {p}:log            ZSET id -> version it was added at (a reader fetches only the delta)
    {p}:requests       ZSET request id -> version
    {p}:req:{id}       HASH body / accepted_at_ms / version
    {p}:events:{id}    LIST of JSON timeline events

``add`` is one Lua script, so it is atomic and idempotent: a request id seen
before returns its original acceptance and changes nothing. The password comes
from ``RTBF_REDIS_PASSWORD`` (never the command line); a password in the URL is
refused so it does not end up in shell history and job listings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from urllib.parse import parse_qs, urlparse

from beam_rtbf.records import AcceptedRequest, ErasureRequest, now_ms
from beam_rtbf.registry.base import (
    DeletionRegistry,
    RegistryDelta,
    RegistryUnavailable,
    RequestEvent,
    request_from_json,
    request_to_json,
)

__all__ = ["RedisRegistry", "PASSWORD_ENV"]

PASSWORD_ENV = "RTBF_REDIS_PASSWORD"

# KEYS: version, members, log, requests. ARGV: prefix, now_ms, then (request_id, body, subjects_json)...
_ADD_SCRIPT = """
local prefix, now = ARGV[1], ARGV[2]
local out = {}
local new_version = nil
local seen = {}
for i = 3, #ARGV, 3 do
  local rid, body, subjects = ARGV[i], ARGV[i + 1], cjson.decode(ARGV[i + 2])
  local key = prefix .. ':req:' .. rid
  local existing = redis.call('HMGET', key, 'body', 'accepted_at_ms', 'version')
  if existing[1] then
    table.insert(out, {existing[1], existing[2], existing[3], 1})
  elseif seen[rid] then
    table.insert(out, {seen[rid][1], seen[rid][2], seen[rid][3], 1})
  else
    if not new_version then new_version = redis.call('INCR', KEYS[1]) end
    redis.call('HSET', key, 'body', body, 'accepted_at_ms', now, 'version', new_version)
    for _, subject in ipairs(subjects) do
      redis.call('SADD', KEYS[2], subject)
      redis.call('ZADD', KEYS[3], 'NX', new_version, subject)
    end
    redis.call('ZADD', KEYS[4], new_version, rid)
    redis.call('RPUSH', prefix .. ':events:' .. rid,
               cjson.encode({status = 'received', at_ms = tonumber(now), detail = ''}))
    seen[rid] = {body, now, new_version}
    table.insert(out, {body, now, tostring(new_version), 0})
  end
end
return out
"""

# KEYS: events list. ARGV: status, event JSON. Appends unless an event of that status is there; 1 if appended.
_EVENT_ONCE_SCRIPT = """
for _, row in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if cjson.decode(row)['status'] == ARGV[1] then return 0 end
end
redis.call('RPUSH', KEYS[1], ARGV[2])
return 1
"""

# KEYS: version, log. ARGV: since. Returns {current_version, ids...} read atomically.
_DELTA_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], current)
table.insert(ids, 1, tostring(current))
return ids
"""


class RedisRegistry(DeletionRegistry):
    """Deletion registry in Redis; every failure to reach it is ``RegistryUnavailable``."""

    def __init__(self, url: str, socket_timeout_s: float = 5.0) -> None:
        import redis

        parsed = urlparse(url)
        if parsed.password:
            raise ValueError(f"put the Redis password in ${PASSWORD_ENV}, not in the registry URL")
        query = parse_qs(parsed.query)
        self.prefix = query.pop("prefix", ["{rtbf}"])[0]
        clean_url = parsed._replace(query="").geturl()
        self._display = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 6379}{parsed.path or ''}"
        password = os.environ.get(PASSWORD_ENV) or None
        self._has_password = password is not None
        self._redis = redis.Redis.from_url(
            clean_url,
            password=password,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            decode_responses=True,
        )
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self._auth_errors = (
            redis.exceptions.AuthenticationError,
            redis.exceptions.AuthenticationWrongNumberOfArgsError,
        )
        self._response_error = redis.exceptions.ResponseError
        self._keys = tuple(f"{self.prefix}:{k}" for k in ("version", "members", "log", "requests"))
        self._add = self._redis.register_script(_ADD_SCRIPT)
        self._delta = self._redis.register_script(_DELTA_SCRIPT)
        self._event_once = self._redis.register_script(_EVENT_ONCE_SCRIPT)
        self._call(self._redis.ping)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._auth_errors as exc:
            if not self._has_password:
                raise RegistryUnavailable(
                    f"Redis at {self._display} needs a password ({exc}); set ${PASSWORD_ENV}"
                ) from exc
            raise RegistryUnavailable(
                f"Redis at {self._display} refused the credentials ({exc}); check ${PASSWORD_ENV}"
            ) from exc
        except self._errors as exc:
            raise RegistryUnavailable(f"Redis at {self._display} unreachable: {exc}") from exc
        except self._response_error as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise RegistryUnavailable(
                    f"Redis at {self._display} needs a password ({exc}); set ${PASSWORD_ENV}"
                ) from exc
            raise

    def add(self, requests: Sequence[ErasureRequest]) -> list[AcceptedRequest]:
        if not requests:
            return []
        argv: list[str] = [self.prefix, str(now_ms())]
        for request in requests:
            argv += [request.request_id, request_to_json(request), json.dumps(list(request.subject_ids))]
        rows = self._call(self._add, keys=list(self._keys), args=argv)
        return [
            AcceptedRequest(request_from_json(body), int(at_ms), int(version), bool(int(duplicate)))
            for body, at_ms, version, duplicate in rows
        ]

    def contains(self, subject_ids: Sequence[str]) -> list[bool]:
        ids = list(subject_ids)
        found: list[bool] = []
        for start in range(0, len(ids), 10_000):
            chunk = ids[start : start + 10_000]
            found += [bool(x) for x in self._call(self._redis.smismember, self._keys[1], chunk)]
        return found

    def version(self) -> int:
        return int(self._call(self._redis.get, self._keys[0]) or 0)

    def delta_since(self, version: int) -> RegistryDelta:
        reply = self._call(self._delta, keys=[self._keys[0], self._keys[2]], args=[int(version)])
        return RegistryDelta(int(version), int(reply[0]), tuple(reply[1:]))

    def get_request(self, request_id: str) -> AcceptedRequest | None:
        body, at_ms, version = self._call(
            self._redis.hmget, f"{self.prefix}:req:{request_id}", "body", "accepted_at_ms", "version"
        )
        if body is None:
            return None
        return AcceptedRequest(request_from_json(body), int(at_ms), int(version), False)

    def record_event(self, request_id: str, status: str, at_ms: int, detail: str = "") -> None:
        event = json.dumps({"status": status, "at_ms": at_ms, "detail": detail})
        self._call(self._redis.rpush, f"{self.prefix}:events:{request_id}", event)

    def record_events(self, events: Sequence[tuple[str, str, int, str]]) -> None:
        def push() -> None:
            pipe = self._redis.pipeline(transaction=True)  # one round trip, applied in order
            for request_id, status, at_ms, detail in events:
                pipe.rpush(
                    f"{self.prefix}:events:{request_id}",
                    json.dumps({"status": status, "at_ms": at_ms, "detail": detail}),
                )
            pipe.execute()

        if events:
            self._call(push)

    def record_event_once(self, request_id: str, status: str, at_ms: int, detail: str = "") -> bool:
        return self.record_events_once([(request_id, status, at_ms, detail)])[0]

    def record_events_once(self, events: Sequence[tuple[str, str, int, str]]) -> list[bool]:
        def push() -> list[bool]:
            pipe = self._redis.pipeline(transaction=False)  # one round trip; each script is atomic
            for request_id, status, at_ms, detail in events:
                event = json.dumps({"status": status, "at_ms": at_ms, "detail": detail})
                self._event_once(keys=[f"{self.prefix}:events:{request_id}"], args=[status, event], client=pipe)
            return [bool(int(done)) for done in pipe.execute()]

        return self._call(push) if events else []

    def timeline(self, request_id: str) -> list[RequestEvent]:
        rows = self._call(self._redis.lrange, f"{self.prefix}:events:{request_id}", 0, -1)
        events = [json.loads(row) for row in rows]
        return [RequestEvent(request_id, e["status"], int(e["at_ms"]), e.get("detail") or "") for e in events]

    def requests(self) -> list[AcceptedRequest]:
        ids = self._call(self._redis.zrange, self._keys[3], 0, -1)
        found = [self.get_request(request_id) for request_id in ids]
        return sorted((a for a in found if a is not None), key=lambda a: (a.version, a.request.request_id))

    def size(self) -> int:
        return int(self._call(self._redis.scard, self._keys[1]))

    def close(self) -> None:
        self._redis.close()
