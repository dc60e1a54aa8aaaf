"""A local S3-compatible endpoint for tests: moto's server (a real HTTP S3 API, versioning included).

Started as its own process on 127.0.0.1 and a free port, checked to listen on loopback only,
and stopped by the PID it was started with.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from beam_rtbf.testing.redis_server import free_port, stop_process, wait_listening

__all__ = ["S3Server", "listening_addresses"]

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def listening_addresses(pid: int) -> set[str]:
    """Local addresses of the TCP sockets ``pid`` listens on, from /proc (no ss/netstat needed)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address = local.split(":")[0]
                found.add(_decode(address, width))
    return found


def _decode(hex_address: str, width: int) -> str:
    import ipaddress

    raw = bytes.fromhex(hex_address)
    if width == 8:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


class S3Server:
    """``python -m moto.server`` on loopback; ``client()`` is a boto3 S3 client for it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pipeline_args(self) -> list[str]:
        """Beam's S3Options for this endpoint: what a run or a purge is given to use it."""
        return [
            f"--s3_endpoint_url={self.endpoint}",
            f"--s3_access_key_id={ACCESS_KEY}",
            f"--s3_secret_access_key={SECRET_KEY}",
            f"--s3_region_name={REGION}",
        ]

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_listening(self.process, self.port, time.monotonic() + 30):
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode} (pip install 'moto[server]')")
            self.stop()
            raise RuntimeError("moto server did not listen within 30 s")
        addresses = listening_addresses(self.process.pid)
        if addresses != {"127.0.0.1"}:
            self.stop()
            raise RuntimeError(f"moto server listens on {sorted(addresses)}, expected loopback only")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
