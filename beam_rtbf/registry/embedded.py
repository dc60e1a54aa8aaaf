"""Embedded registry backend: one SQLite file, durable across restarts, no server.

SQLite in WAL mode gives atomic, durable transactions and lets several local
workers (threads or processes) share the file; ``busy_timeout`` makes writers
wait for each other instead of failing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence

from beam_rtbf.records import AcceptedRequest, ErasureRequest, now_ms
from beam_rtbf.registry.base import (
    DeletionRegistry,
    RegistryDelta,
    RegistryUnavailable,
    RequestEvent,
    request_from_json,
    request_to_json,
)

__all__ = ["EmbeddedRegistry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (k, v) VALUES ('version', 0);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    accepted_at_ms INTEGER NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    subject_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS members_by_version ON members (version);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    status TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_by_request ON events (request_id, seq);
"""


class EmbeddedRegistry(DeletionRegistry):
    """Deletion registry in a local SQLite file (``embedded://PATH``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, exist_ok=True)
            self._conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
            self._conn.commit()
        except (OSError, sqlite3.Error) as exc:
            raise RegistryUnavailable(f"cannot open embedded registry at {path!r}: {exc}") from exc
        self._lock = threading.Lock()

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise RegistryUnavailable(f"embedded registry {self.path!r}: {exc}") from exc

    def add(self, requests: Sequence[ErasureRequest]) -> list[AcceptedRequest]:
        results: list[AcceptedRequest] = []
        try:
            with self._lock, self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                (version,) = self._conn.execute("SELECT v FROM meta WHERE k='version'").fetchone()
                new_version = version + 1
                changed = False
                at_ms = now_ms()
                seen_in_call: dict[str, AcceptedRequest] = {}
                for request in requests:
                    row = self._conn.execute(
                        "SELECT body, accepted_at_ms, version FROM requests WHERE request_id=?",
                        (request.request_id,),
                    ).fetchone()
                    if row is not None:
                        results.append(AcceptedRequest(request_from_json(row[0]), row[1], row[2], True))
                        continue
                    if request.request_id in seen_in_call:
                        first = seen_in_call[request.request_id]
                        results.append(AcceptedRequest(first.request, first.accepted_at_ms, first.version, True))
                        continue
                    self._conn.execute(
                        "INSERT INTO requests (request_id, body, accepted_at_ms, version) VALUES (?,?,?,?)",
                        (request.request_id, request_to_json(request), at_ms, new_version),
                    )
                    self._conn.executemany(
                        "INSERT OR IGNORE INTO members (subject_id, version, request_id) VALUES (?,?,?)",
                        [(s, new_version, request.request_id) for s in request.subject_ids],
                    )
                    self._conn.execute(
                        "INSERT INTO events (request_id, status, at_ms) VALUES (?, 'received', ?)",
                        (request.request_id, at_ms),
                    )
                    changed = True
                    accepted = AcceptedRequest(request, at_ms, new_version, False)
                    seen_in_call[request.request_id] = accepted
                    results.append(accepted)
                if changed:
                    self._conn.execute("UPDATE meta SET v=? WHERE k='version'", (new_version,))
        except sqlite3.Error as exc:
            raise RegistryUnavailable(f"embedded registry {self.path!r}: {exc}") from exc
        return results

    def contains(self, subject_ids: Sequence[str]) -> list[bool]:
        ids = list(subject_ids)
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._query(f"SELECT subject_id FROM members WHERE subject_id IN ({marks})", chunk)
            found.update(r[0] for r in rows)
        return [s in found for s in ids]

    def version(self) -> int:
        return int(self._query("SELECT v FROM meta WHERE k='version'")[0][0])

    def delta_since(self, version: int) -> RegistryDelta:
        try:
            with self._lock, self._conn:
                (current,) = self._conn.execute("SELECT v FROM meta WHERE k='version'").fetchone()
                rows = self._conn.execute(
                    "SELECT subject_id FROM members WHERE version > ? AND version <= ?",
                    (version, current),
                ).fetchall()
        except sqlite3.Error as exc:
            raise RegistryUnavailable(f"embedded registry {self.path!r}: {exc}") from exc
        return RegistryDelta(version, int(current), tuple(r[0] for r in rows))

    def get_request(self, request_id: str) -> AcceptedRequest | None:
        rows = self._query("SELECT body, accepted_at_ms, version FROM requests WHERE request_id=?", (request_id,))
        if not rows:
            return None
        body, at_ms, version = rows[0]
        return AcceptedRequest(request_from_json(body), at_ms, version, False)

    def record_event(self, request_id: str, status: str, at_ms: int, detail: str = "") -> None:
        try:
            with self._lock, self._conn:
                self._conn.execute(
                    "INSERT INTO events (request_id, status, at_ms, detail) VALUES (?,?,?,?)",
                    (request_id, status, at_ms, detail),
                )
        except sqlite3.Error as exc:
            raise RegistryUnavailable(f"embedded registry {self.path!r}: {exc}") from exc

    def record_events(self, events: Sequence[tuple[str, str, int, str]]) -> None:
        try:
            with self._lock, self._conn:  # one transaction: one commit (fsync) for them all
                self._conn.executemany(
                    "INSERT INTO events (request_id, status, at_ms, detail) VALUES (?,?,?,?)", events
                )
        except sqlite3.Error as exc:
            raise RegistryUnavailable(f"embedded registry {self.path!r}: {exc}") from exc

    def record_event_once(self, request_id: str, status: str, at_ms: int, detail: str = "") -> bool:
        return self.record_events_once([(request_id, status, at_ms, detail)])[0]

    def record_events_once(self, events: Sequence[tuple[str, str, int, str]]) -> list[bool]:
        appended = []
        try:
            with self._lock, self._conn:  # one transaction: checked and appended together
                self._conn.execute("BEGIN IMMEDIATE")
                for request_id, status, at_ms, detail in events:
                    seen = self._conn.execute(
                        "SELECT 1 FROM events WHERE request_id=? AND status=? LIMIT 1", (request_id, status)
                    ).fetchone()
                    if seen is None:
                        self._conn.execute(
                            "INSERT INTO events (request_id, status, at_ms, detail) VALUES (?,?,?,?)",
                            (request_id, status, at_ms, detail),
                        )
                    appended.append(seen is None)
            return appended
        except sqlite3.Error as exc:
            raise RegistryUnavailable(f"embedded registry {self.path!r}: {exc}") from exc

    def timeline(self, request_id: str) -> list[RequestEvent]:
        rows = self._query(
            "SELECT request_id, status, at_ms, detail FROM events WHERE request_id=? ORDER BY seq",
            (request_id,),
        )
        return [RequestEvent(*row) for row in rows]

    def requests(self) -> list[AcceptedRequest]:
        rows = self._query("SELECT body, accepted_at_ms, version FROM requests ORDER BY version, request_id")
        return [AcceptedRequest(request_from_json(b), a, v, False) for b, a, v in rows]

    def size(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM members")[0][0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
