"""A local erasure API for tests: records every call and answers from a script of failures.

It behaves like a well-made real one: it checks the bearer token (401 otherwise), carries out a
request once per ``Idempotency-Key`` (a repeated key is answered 200 without erasing again), and
sends ``Retry-After`` with its 429s. Listens on loopback only, on a free port.

``echo_headers=True`` makes it behave like a careless one: its error bodies echo the request
headers (the bearer token included), the way some frameworks' debug error pages do.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["ErasureApiServer", "RecordedCall"]


@dataclass
class RecordedCall:
    path: str
    headers: dict[str, str]
    body: dict
    status: int
    at: float


@dataclass
class _State:
    token: str
    script: dict[str, list[int]]
    retry_after: str | None
    echo_headers: bool = False
    calls: list[RecordedCall] = field(default_factory=list)
    erased: dict[str, dict] = field(default_factory=dict)  # idempotency key -> body carried out
    seen: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)


class ErasureApiServer:
    """``script`` maps a request id to the statuses of its successive calls; after that: 200."""

    def __init__(
        self,
        token: str,
        script: dict[str, list[int]] | None = None,
        retry_after: str | None = None,
        echo_headers: bool = False,
    ) -> None:
        self.state = _State(token, {k: list(v) for k, v in (script or {}).items()}, retry_after, echo_headers)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="erasure-api", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1/erasures"

    @property
    def calls(self) -> list[RecordedCall]:
        with self.state.lock:
            return list(self.state.calls)

    @property
    def erased(self) -> dict[str, dict]:
        with self.state.lock:
            return dict(self.state.erased)

    def __enter__(self) -> ErasureApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet: tests read the recorded calls
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            import time

            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = {}
            key = self.headers.get("Idempotency-Key", "")
            with state.lock:
                if self.headers.get("Authorization") != f"Bearer {state.token}":
                    status = 401
                elif not key or not isinstance(body, dict) or "request_id" not in body:
                    status = 400
                else:
                    request_id = str(body["request_id"])
                    planned = state.script.get(request_id, [])
                    index = state.seen[request_id]
                    state.seen[request_id] += 1
                    status = planned[index] if index < len(planned) else 200
                    if status == 200:
                        state.erased.setdefault(key, body)
                state.calls.append(RecordedCall(self.path, dict(self.headers), body, status, time.time()))
            answer = {"status": status, "error": None if status < 400 else "scripted failure"}
            if status >= 400 and state.echo_headers:
                answer["debug"] = f"token {state.token} Authorization={self.headers.get('Authorization')}"
                answer["request_headers"] = dict(self.headers)
            payload = json.dumps(answer).encode()
            self.send_response(status)
            if status == 429 and state.retry_after is not None:
                self.send_header("Retry-After", state.retry_after)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler
