"""A real PostgreSQL for tests: Debian's server, ``initdb`` in a temporary folder, loopback, stopped by its PID.

PostgreSQL refuses to run as root: as root the cluster's folder is handed to the
``postgres`` user and the server runs as that user (``subprocess``'s ``user=``). Password
authentication (SCRAM) for TCP connections, so a test can show what a wrong or missing
password does; the Unix socket lives in the cluster's own folder, never in /var/run.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from beam_rtbf.testing.redis_server import free_port, stop_process, wait_listening

__all__ = ["PostgresServer", "postgres_bin"]


def postgres_bin() -> str:
    """The newest Debian PostgreSQL's bin folder (``/usr/lib/postgresql/<major>/bin``), else the PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql (scripts/test.sh does)")
    return os.path.dirname(initdb)


class PostgresServer:
    """One PostgreSQL cluster: superuser ``user`` with ``password``, database ``database``, on 127.0.0.1."""

    def __init__(self, user: str = "rtbf", password: str = "rtbf-test-password", database: str = "rtbf") -> None:
        self.bin = postgres_bin()
        self.user, self.password, self.database = user, password, database
        self.port = free_port()
        self.root = tempfile.mkdtemp(prefix="rtbf-pg-")  # not under a 0700 pytest folder: postgres must reach it
        self.data_dir = os.path.join(self.root, "data")
        self.process: subprocess.Popen | None = None
        self._run_as = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        """The connection URL without the password (give it through the environment)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _popen_kwargs(self) -> dict:
        if self._run_as is None:
            return {}
        entry = pwd.getpwnam(self._run_as)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self) -> None:
        if self._run_as:
            entry = pwd.getpwnam(self._run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        password_file = os.path.join(self.root, "pwfile")
        with open(os.open(password_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            handle.write(self.password + "\n")
        if self._run_as:
            os.chown(password_file, *(lambda e: (e.pw_uid, e.pw_gid))(pwd.getpwnam(self._run_as)))
        subprocess.run(
            [f"{self.bin}/initdb", "-D", self.data_dir, "-U", self.user, f"--pwfile={password_file}",
             "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
            check=True, capture_output=True, cwd=self.root, **self._popen_kwargs(),
        )  # fmt: skip
        os.unlink(password_file)
        self.process = subprocess.Popen(
            [f"{self.bin}/postgres", "-D", self.data_dir, "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={self.root}", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.root, "postgres.log"), "wb"), cwd=self.root,
            **self._popen_kwargs(),
        )  # fmt: skip
        if not wait_listening(self.process, self.port, time.monotonic() + 30):
            log = open(os.path.join(self.root, "postgres.log"), encoding="utf-8", errors="replace").read()[-2000:]
            self.stop()
            raise RuntimeError(f"postgres did not listen on 127.0.0.1:{self.port}: {log}")
        self._create_database()

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(
                    self.url.rsplit("/", 1)[0] + "/postgres", password=self.password, autocommit=True
                ) as conn:
                    if self.database != "postgres":
                        conn.execute(f'CREATE DATABASE "{self.database}"')
                    return
            except psycopg.OperationalError:  # still starting up ("the database system is starting up")
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def connect(self):
        """A psycopg connection to the test database (autocommit)."""
        import psycopg

        return psycopg.connect(self.url, password=self.password, autocommit=True)

    def stop(self) -> None:
        """Stop the server this object started (by its PID), then delete the cluster."""
        if self.process is not None:
            stop_process(self.process)
            self.process = None
        shutil.rmtree(self.root, ignore_errors=True)
