"""Run inside a network namespace of its own (``tests/helpers/netns.py``): the dashboard bound to 0.0.0.0.

    python tests/helpers/dashboard_token_probe.py OUTPUT TOKEN

Starts ``beam-rtbf dashboard --host 0.0.0.0`` with ``$RTBF_DASHBOARD_TOKEN`` (the namespace
has only ``lo``, so "every interface" is reachable from nowhere else), asks it a few
questions over 127.0.0.1, prints one JSON object with the answers, and stops it by its PID.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from beam_rtbf.testing.redis_server import free_port, stop_process, wait_listening  # noqa: E402


def ask(port: int, path: str, headers: dict | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return {
            "status": response.status,
            "location": response.getheader("Location"),
            "set_cookie": response.getheader("Set-Cookie"),
            "body_start": body[:60].decode("utf-8", "replace"),
        }
    finally:
        conn.close()


def main() -> int:
    output, token = sys.argv[1], sys.argv[2]
    port = free_port()
    env = {**os.environ, "RTBF_DASHBOARD_TOKEN": token}
    server = subprocess.Popen(
        [sys.executable, "-m", "beam_rtbf.cli", "dashboard", f"--output={output}", "--host=0.0.0.0", f"--port={port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        if not wait_listening(server, port, time.monotonic() + 90):
            print(json.dumps({"error": "dashboard did not listen"}))
            return 1
        answers = {
            "no_token": ask(port, "/"),
            "layout_no_token": ask(port, "/_dash-layout"),
            "wrong_token": ask(port, "/", {"Authorization": "Bearer not-the-token-at-all"}),
            "bearer": ask(port, "/", {"Authorization": f"Bearer {token}"}),
            "layout_bearer": ask(port, "/_dash-layout", {"Authorization": f"Bearer {token}"}),
            "query": ask(port, f"/?token={token}"),
        }
        cookie = (answers["query"]["set_cookie"] or "").split(";")[0]
        answers["cookie"] = ask(port, "/", {"Cookie": cookie})
        answers["layout_cookie"] = ask(port, "/_dash-layout", {"Cookie": cookie})
    finally:
        stop_process(server)
    answers["first_line"] = server.stdout.read().decode().splitlines()[0]
    print(json.dumps(answers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
