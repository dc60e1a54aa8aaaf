"""A real PostgreSQL server for tests: ``initdb`` in a temporary folder, loopback TCP only, a free port,
password authentication (scram-sha-256), stopped by the PID it started.

PostgreSQL refuses to run as root: under root the server runs as the unprivileged ``postgres``
user that Debian's package creates (``nobody`` without it), in a folder of its own under the
system temporary directory (a test's ``tmp_path`` lies under a root-only folder).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from beam_rtbf.testing.redis_server import free_port, stop_process, wait_listening

__all__ = ["PostgresServer", "postgres_bindir"]


def postgres_bindir() -> str:
    """The folder holding ``initdb`` and ``postgres``: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3].split(".")[0])
    )
    if not candidates:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql (scripts/test.sh does)")
    return os.path.dirname(candidates[-1])


def _server_user() -> pwd.struct_passwd | None:
    """Who the server runs as: this user, or an unprivileged one when this is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")


class PostgresServer:
    """One ``postgres`` process with database ``database`` owned by ``user`` (password ``password``)."""

    def __init__(self, user: str = "rtbf", password: str = "rtbf-test-secret", database: str = "rtbf") -> None:
        self.bindir = postgres_bindir()
        self.user, self.password, self.database = user, password, database
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._runas = _server_user()
        self.folder = tempfile.mkdtemp(prefix="rtbf-postgres-")
        self.data_dir = os.path.join(self.folder, "data")
        if self._runas is not None:
            os.chmod(self.folder, 0o700)
            os.chown(self.folder, self._runas.pw_uid, self._runas.pw_gid)
        self._initdb()

    @property
    def host_uri(self) -> str:
        """``postgresql://USER@127.0.0.1:PORT/DB``: no password (it comes from the environment)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def sink_uri(self, table: str = "rtbf_analytics") -> str:
        return f"{self.host_uri}?table={table}"

    def _as_server_user(self) -> dict:
        if self._runas is None:
            return {}
        return {"user": self._runas.pw_uid, "group": self._runas.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        pwfile = os.path.join(self.folder, "pwfile")
        with open(pwfile, "w", encoding="utf-8") as handle:
            handle.write(self.password + "\n")
        if self._runas is not None:
            os.chown(pwfile, self._runas.pw_uid, self._runas.pw_gid)
        os.chmod(pwfile, 0o600)
        done = subprocess.run(
            [
                os.path.join(self.bindir, "initdb"),
                "--pgdata",
                self.data_dir,
                "--username",
                self.user,
                "--pwfile",
                pwfile,
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            cwd=self.folder,
            **self._as_server_user(),
        )
        os.unlink(pwfile)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    def start(self) -> None:
        log = open(os.path.join(self.folder, "postgres.log"), "ab")  # noqa: SIM115 - the server's own log
        try:
            self.process = subprocess.Popen(
                [
                    os.path.join(self.bindir, "postgres"),
                    "-D",
                    self.data_dir,
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=50",
                ],
                stdout=log,
                stderr=log,
                cwd=self.folder,
                **self._as_server_user(),
            )
        finally:
            log.close()
        if not wait_listening(self.process, self.port, time.monotonic() + 30):
            raise RuntimeError(f"postgres did not listen on 127.0.0.1:{self.port}; see {self.log_text()[-2000:]}")
        self._create_database()

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(
                    host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                    dbname="postgres", autocommit=True,
                ) as conn:  # fmt: skip
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{self.database}"')
                    return
            except psycopg.OperationalError:  # still starting up ("the database system is starting up")
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def connect(self, **kwargs):
        """A psycopg connection to the test database as its owner (autocommit)."""
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password,
            dbname=self.database, autocommit=True, **kwargs,
        )  # fmt: skip

    def log_text(self) -> str:
        try:
            with open(os.path.join(self.folder, "postgres.log"), encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def stop(self, kill: bool = False) -> None:
        """Stop the process this object started: a fast shutdown (SIGINT: sessions are ended, unlike
        SIGTERM's wait for them), or SIGKILL with ``kill`` (a crash)."""
        if self.process is None:
            return
        if kill:
            stop_process(self.process, kill=True)
        else:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                stop_process(self.process, kill=True)
        self.process = None

    def close(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
