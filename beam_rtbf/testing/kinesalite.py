"""kinesalite (npm) as a real local Kinesis endpoint: loopback only, a free port, stopped by its PID.

kinesalite's command line listens on every interface whatever ``--host`` says,
so it is started through its library API, bound to 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

from beam_rtbf.testing.redis_server import free_port

_SCRIPT = """
const kinesalite = require(process.argv[1]);
const server = kinesalite({createStreamMs: 50, deleteStreamMs: 50, updateStreamMs: 50, shardLimit: 100});
server.listen(Number(process.argv[2]), '127.0.0.1', () => console.log('listening'));
"""


def kinesalite_module() -> str:
    """Where the kinesalite package is: $KINESALITE_DIR, or .tools/ of the repo (scripts/test.sh puts it there)."""
    candidates = [os.environ.get("KINESALITE_DIR", "")]
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidates.append(os.path.join(repo, ".tools", "node_modules", "kinesalite"))
    for path in candidates:
        if path and os.path.exists(os.path.join(path, "package.json")):
            return path
    raise RuntimeError("kinesalite is not installed: npm install --prefix .tools kinesalite (scripts/test.sh does)")


class Kinesalite:
    def __init__(self) -> None:
        self.node = shutil.which("node")
        if self.node is None:
            raise RuntimeError("node is not installed: apt-get install -y nodejs npm")
        self.module = kinesalite_module()
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.node, "-e", _SCRIPT, self.module, str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kinesalite exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("kinesalite did not listen within 15 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
