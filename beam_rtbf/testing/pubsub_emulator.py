"""The Google Cloud CLI's Pub/Sub emulator on a free loopback port, stopped with its process group.

``gcloud`` starts the emulator as a Java child process, so the fixture starts
it in a new session and stops that whole process group (the group of the PID it
started), never anything found by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

from beam_rtbf.testing.redis_server import free_port


class PubSubEmulator:
    def __init__(self, data_dir: str) -> None:
        self.gcloud = shutil.which("gcloud")
        if self.gcloud is None:
            raise RuntimeError("gcloud is not installed (Google Cloud CLI with the pubsub-emulator component)")
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.gcloud,
                "beta",
                "emulators",
                "pubsub",
                "start",
                f"--host-port={self.host}",
                f"--data-dir={self.data_dir}",
                "--quiet",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Pub/Sub emulator exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("the Pub/Sub emulator did not listen within 60 s")

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        self.process = None
