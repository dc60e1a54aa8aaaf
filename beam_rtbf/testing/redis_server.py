"""A real redis-server for tests: loopback only, a free port, AOF persistence, stopped by its PID."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(process: subprocess.Popen, port: int, deadline: float) -> bool:
    """Wait until 127.0.0.1:``port`` accepts a connection (True); False once ``process`` exited or
    ``deadline`` (``time.monotonic()``) passed: the caller says which, in its own words."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def stop_process(process: subprocess.Popen, kill: bool = False, timeout_s: float = 10.0) -> None:
    """Stop a server by the process a fixture started: SIGTERM (SIGKILL with ``kill``: a crash),
    then SIGKILL if it has not ended within ``timeout_s``."""
    if kill:
        process.kill()
    else:
        process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


class RedisServer:
    """One redis-server process; ``stop()``/``start()`` again on the same port and data dir."""

    def __init__(self, data_dir: str, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install -y redis-server (scripts/test.sh does)")
        self.binary = binary
        self.data_dir = data_dir
        self.password = password
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        os.makedirs(data_dir, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.data_dir,
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            os.path.join(self.data_dir, "redis.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {self.data_dir}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer within 10 s")

    def stop(self, kill: bool = False) -> None:
        """Stop the process this object started (SIGKILL with ``kill=True``: a crash)."""
        if self.process is None:
            return
        stop_process(self.process, kill)
        self.process = None
