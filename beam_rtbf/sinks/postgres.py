"""Analytics rows in PostgreSQL: the URI, the connection, the tables and every statement that writes them.

    --analytics_sink 'postgresql://rtbf@db.internal:5432/analytics?table=rtbf_analytics'

The password never travels in the URI (refused there): it comes from
``$RTBF_POSTGRES_PASSWORD``, or from libpq's own places (``?service=NAME`` and its
service file, ``~/.pgpass``). Query parameters other than ``table`` are libpq's
(``sslmode``, ``service``, ``connect_timeout``...) and are checked against libpq's list.

What the tool creates (and migrates, under an advisory lock, recording the version in
``<table>_meta``), for ``table=T``:

    T_parts   one row per (window_start, action_type, device_type, writer run, pane):
              sessions, distinct_users, secs_elapsed_sum, secs_elapsed_count
    T_runs    the writers: a bounded run is 'staged' until its ledger commits it, a
              streaming run (or one without the ledger) is 'committed' from the start,
              a dead run is 'abandoned' (its parts deleted)
    T         a view, one row per (window_start, action_type, device_type) over the
              committed parts: window_end, sessions, distinct_users, avg_secs_elapsed

Why parts: a pane delivered again (a retried bundle, a replayed stream) upserts the
same part and replaces it, so it never adds; two runs that both hold sessions of one
window (two files of one day, ``--append``, a late pane) are different parts and add
up, as their pane files do; and a bounded run's parts stay invisible until its run
ledger commits, so a killed run and its re-run count once. A purge replaces every counted
part of the windows it recomputes with one part of its own, in one transaction (a running run's
staged parts stay: they count once its ledger publishes them, and its manifests name the windows).
``distinct_users`` of a window written by several parts is their sum (a user seen by
two runs counts twice, as when the pane files are added up); a purge's recomputed
window is exact. Needs PostgreSQL 15 or newer (``UNIQUE NULLS NOT DISTINCT``: a
missing action or device type is a key value too).

Retry policy: connection failures (``AnalyticsSinkUnavailable``) are transient, the
step raises and the runner retries the bundle; the upsert makes that harmless.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from beam_rtbf.redact import mask_secrets

__all__ = [
    "PASSWORD_ENV",
    "SCHEMA_VERSION",
    "AnalyticsSinkUnavailable",
    "AnalyticsSinkError",
    "PostgresTarget",
    "parse_sink",
    "connect",
    "ensure_schema",
    "register_run",
    "publish_run",
    "discard_run",
    "prepare_writer",
    "publish_writer",
    "discard_writer",
    "is_postgres_uri",
    "upsert_parts",
    "replace_windows",
    "window_rows",
    "PART_COLUMNS",
]

PASSWORD_ENV = "RTBF_POSTGRES_PASSWORD"
SCHEMES = ("postgresql", "postgres")
DEFAULT_TABLE = "rtbf_analytics"
SCHEMA_VERSION = 1
MIN_SERVER_VERSION = 150000  # UNIQUE NULLS NOT DISTINCT

STAGED, COMMITTED, ABANDONED = "staged", "committed", "abandoned"

# What a part row holds, in COPY order.
PART_COLUMNS = (
    "window_start",
    "window_end",
    "action_type",
    "device_type",
    "run_id",
    "pane",
    "sessions",
    "distinct_users",
    "secs_elapsed_sum",
    "secs_elapsed_count",
)
_KEY = ("window_start", "action_type", "device_type", "run_id", "pane")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")  # room for the _parts/_runs/_meta suffixes in 63 bytes
_OWN_PARAMS = {"table"}
_CONNECT_DEFAULTS = {"application_name": "beam-rtbf", "connect_timeout": 10}  # unless the URI sets them


class AnalyticsSinkUnavailable(ConnectionError):
    """The database cannot be reached or refused the connection (transient for a running step)."""


class AnalyticsSinkError(ValueError):
    """The database answered but refused the driver's work (a missing schema, no privilege, a table
    someone altered): one line naming the sink, never a traceback."""


@dataclasses.dataclass(frozen=True)
class PostgresTarget:
    """A parsed ``--analytics_sink``: where (libpq conninfo, no password) and which table."""

    uri: str  # as given (it holds no password): manifests and receipts name the sink by it
    conninfo: str  # the URI without beam-rtbf's own parameters, for libpq
    schema: str | None
    table: str

    def name(self, suffix: str = "") -> tuple[str, ...]:
        """The qualified name of the table's object ``T<suffix>`` as identifier parts."""
        return (self.schema, self.table + suffix) if self.schema else (self.table + suffix,)

    @property
    def label(self) -> str:
        """``schema.table`` or ``table``, for messages."""
        return ".".join(self.name())


def is_postgres_uri(uri: str | None) -> bool:
    return bool(uri) and urlsplit(uri).scheme in SCHEMES


def _libpq_keywords() -> set[str]:
    import psycopg

    return {option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults()}


def parse_sink(uri: str) -> PostgresTarget:
    """Check ``uri`` and split it into conninfo and table; ``ValueError`` says what to fix, in one line."""
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"--analytics_sink {mask_secrets(uri)!r}: expected postgresql://[USER@]HOST[:PORT]/DB?table=NAME"
        )
    if parts.password is not None:
        raise ValueError(
            f"--analytics_sink {mask_secrets(uri)}: a password in the URI is refused (it would reach shell "
            f"history, logs and manifests); put it in ${PASSWORD_ENV}, ~/.pgpass or a libpq service file"
        )
    if parts.fragment:
        raise ValueError(f"--analytics_sink {mask_secrets(uri)}: a #fragment means nothing here; remove it")
    params = parse_qsl(parts.query, keep_blank_values=True)
    names = [k for k, _ in params]
    if "password" in names:
        raise ValueError(
            f"--analytics_sink: a password parameter is refused; put it in ${PASSWORD_ENV}, ~/.pgpass or "
            "a libpq service file"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"--analytics_sink {uri}: a parameter is given twice")
    unknown = sorted(set(names) - _OWN_PARAMS - _libpq_keywords())
    if unknown:
        raise ValueError(
            f"--analytics_sink {uri}: unknown parameter {unknown[0]!r} (table=NAME, or a libpq parameter such "
            "as sslmode, service, connect_timeout)"
        )
    table = dict(params).get("table") or DEFAULT_TABLE
    schema, _, name = table.rpartition(".")
    for part in (schema, name) if schema else (name,):
        if not _NAME.fullmatch(part):
            raise ValueError(
                f"--analytics_sink {uri}: table {table!r} must be NAME or SCHEMA.NAME, each of letters, digits "
                "and _ (not starting with a digit, at most 48 characters)"
            )
    query = urlencode([(k, v) for k, v in params if k not in _OWN_PARAMS])
    # The text before the query as given: urlunsplit would turn postgresql:///db (no host) into postgresql:/db.
    libpq = uri.split("?", 1)[0] + (f"?{query}" if query else "")
    return PostgresTarget(uri, libpq, schema or None, name)


def connect(target: PostgresTarget, **kwargs: Any):
    """A psycopg connection; ``AnalyticsSinkUnavailable`` in one line if it fails.

    Autocommit: every write here is one explicit ``conn.transaction()`` (BEGIN ... COMMIT), never a
    savepoint inside a transaction a read left open. The password is ``$RTBF_POSTGRES_PASSWORD``
    when set, else libpq finds one (service file, pgpass).
    """
    import psycopg

    password = os.environ.get(PASSWORD_ENV)
    given = psycopg.conninfo.conninfo_to_dict(target.conninfo)
    extra = {k: v for k, v in _CONNECT_DEFAULTS.items() if k not in given}
    if password:
        extra["password"] = password
    try:
        return psycopg.connect(target.conninfo, autocommit=True, **extra, **kwargs)
    except psycopg.Error as exc:
        text = " ".join(str(exc).split())
        if password:
            text = text.replace(password, "***")
        raise AnalyticsSinkUnavailable(
            f"analytics sink {mask_secrets(target.uri)} unavailable: {mask_secrets(text)}"
        ) from None


@contextlib.contextmanager
def connection(target: PostgresTarget) -> Iterator[Any]:
    """A connection for one piece of driver work, closed after it."""
    import psycopg

    conn = connect(target)
    try:
        yield conn
    except psycopg.Error as exc:
        diag = getattr(exc, "diag", None)
        text = " ".join(((diag.message_primary if diag else None) or str(exc)).split()) or type(exc).__name__
        raise AnalyticsSinkError(f"analytics sink {mask_secrets(target.uri)}: {mask_secrets(text)}") from None
    finally:
        conn.close()


def _ident(target: PostgresTarget, suffix: str = ""):
    from psycopg import sql

    return sql.Identifier(*target.name(suffix))


def _migrations(target: PostgresTarget) -> list[list[Any]]:
    """Statements per schema version: index 0 brings a database to version 1, and so on."""
    from psycopg import sql

    names = {
        "parts": _ident(target, "_parts"),
        "runs": _ident(target, "_runs"),
        "view": _ident(target),
        "parts_run": sql.Identifier(target.table + "_parts_run"),
        "parts_key": sql.Identifier(target.table + "_parts_key"),
    }
    v1 = [
        """CREATE TABLE {runs} (
            run_id text PRIMARY KEY,
            state text NOT NULL CHECK (state IN ('staged', 'committed', 'abandoned')),
            registered_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now())""",
        """CREATE TABLE {parts} (
            window_start timestamptz NOT NULL,
            window_end timestamptz NOT NULL,
            action_type text,
            device_type text,
            run_id text NOT NULL,
            pane integer NOT NULL,
            sessions bigint NOT NULL,
            distinct_users bigint NOT NULL,
            secs_elapsed_sum double precision NOT NULL,
            secs_elapsed_count bigint NOT NULL,
            written_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT {parts_key} UNIQUE NULLS NOT DISTINCT (window_start, action_type, device_type, run_id, pane))""",
        "CREATE INDEX {parts_run} ON {parts} (run_id)",
        """CREATE VIEW {view} AS
            SELECT p.window_start, max(p.window_end) AS window_end, p.action_type, p.device_type,
                   sum(p.sessions)::bigint AS sessions, sum(p.distinct_users)::bigint AS distinct_users,
                   sum(p.secs_elapsed_sum) / NULLIF(sum(p.secs_elapsed_count), 0) AS avg_secs_elapsed
            FROM {parts} p JOIN {runs} r ON r.run_id = p.run_id AND r.state = 'committed'
            GROUP BY p.window_start, p.action_type, p.device_type""",
    ]
    return [[sql.SQL(statement).format(**names) for statement in v1]]


def ensure_schema(conn, target: PostgresTarget) -> int:
    """Create or migrate the table's objects to ``SCHEMA_VERSION``; returns the version found before.

    Serialised by a transaction-scoped advisory lock, so workers and drivers starting together do
    not race. A database migrated by a newer beam-rtbf is refused (``ValueError``), never downgraded.
    """
    from psycopg import sql

    if conn.info.server_version < MIN_SERVER_VERSION:
        raise ValueError(
            f"analytics sink {target.uri}: PostgreSQL {conn.info.server_version // 10000} is too old "
            "(15 or newer: UNIQUE NULLS NOT DISTINCT)"
        )
    meta = _ident(target, "_meta")
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"beam-rtbf:{target.label}",))
        cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, value text NOT NULL)").format(meta))
        cur.execute(sql.SQL("SELECT value FROM {} WHERE key = 'schema_version'").format(meta))
        row = cur.fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise ValueError(
                f"analytics sink {target.uri}: table {target.label} has schema version {found}, written by a "
                f"newer beam-rtbf (this one knows {SCHEMA_VERSION}); upgrade beam-rtbf"
            )
        if found == 0:
            cur.execute("SELECT to_regclass(%s)", (_quoted(target),))
            if cur.fetchone()[0] is not None:
                raise ValueError(
                    f"analytics sink {target.uri}: {target.label} exists and was not created by beam-rtbf; "
                    "choose another ?table= (it is never altered or dropped)"
                )
        for statements in _migrations(target)[found:]:
            for statement in statements:
                cur.execute(statement)
        if found < SCHEMA_VERSION:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ).format(meta),
                (str(SCHEMA_VERSION),),
            )
    return found


def _quoted(target: PostgresTarget) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in target.name())


def register_run(conn, target: PostgresTarget, run_id: str, staged: bool) -> None:
    """Record a writer before it writes: ``staged`` (invisible until published) or committed.

    A run already registered keeps its state: a worker re-registering cannot revive a run that
    recovery abandoned, nor publish a staged one.
    """
    from psycopg import sql

    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            sql.SQL("INSERT INTO {} (run_id, state) VALUES (%s, %s) ON CONFLICT (run_id) DO NOTHING").format(
                _ident(target, "_runs")
            ),
            (run_id, STAGED if staged else COMMITTED),
        )


def _set_run_state(cur, target: PostgresTarget, run_id: str, state: str) -> None:
    """The run's row says ``state`` (inserted if the run never registered)."""
    from psycopg import sql

    cur.execute(
        sql.SQL(
            "INSERT INTO {} (run_id, state) VALUES (%s, %s) "
            "ON CONFLICT (run_id) DO UPDATE SET state = EXCLUDED.state, updated_at = now()"
        ).format(_ident(target, "_runs")),
        (run_id, state),
    )


def publish_run(conn, target: PostgresTarget, run_id: str) -> int:
    """Make a staged run's parts count (idempotent: the ledger calls it again after a crash). Returns parts."""
    from psycopg import sql

    with conn.transaction(), conn.cursor() as cur:
        _set_run_state(cur, target, run_id, COMMITTED)
        cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE run_id = %s").format(_ident(target, "_parts")), (run_id,))
        return int(cur.fetchone()[0])


def discard_run(conn, target: PostgresTarget, run_id: str) -> int:
    """A dead run's parts are deleted and the run marked abandoned (a late worker's writes stay invisible)."""
    from psycopg import sql

    with conn.transaction(), conn.cursor() as cur:
        _set_run_state(cur, target, run_id, ABANDONED)
        cur.execute(sql.SQL("DELETE FROM {} WHERE run_id = %s").format(_ident(target, "_parts")), (run_id,))
        return cur.rowcount


def prepare_writer(sink_uri: str, run_id: str, staged: bool) -> None:
    """Driver side, before a run: the sink answers, its tables are at this version, the run is registered."""
    target = parse_sink(sink_uri)
    with connection(target) as conn:
        ensure_schema(conn, target)
        register_run(conn, target, run_id, staged)


def publish_writer(sink_uri: str, run_id: str) -> int:
    """The run ledger's publish step for the table: the run's parts count from now on."""
    target = parse_sink(sink_uri)
    with connection(target) as conn:
        ensure_schema(conn, target)  # tables dropped since the run began are created again (empty)
        return publish_run(conn, target, run_id)


def discard_writer(sink_uri: str, run_id: str) -> int:
    """The run ledger's clean-up of a dead run in the table: its parts are deleted."""
    target = parse_sink(sink_uri)
    with connection(target) as conn:
        ensure_schema(conn, target)
        return discard_run(conn, target, run_id)


def _copy_and_merge(cur, target: PostgresTarget, rows: Iterable[Sequence[Any]]) -> int:
    """COPY ``rows`` (``PART_COLUMNS`` order) into a session temp table, then upsert them into the parts:
    a part already there (the same pane again) is replaced, never added to."""
    from psycopg import sql

    incoming = sql.Identifier(f"rtbf_incoming_{target.table}")
    columns = sql.SQL(", ").join(map(sql.Identifier, PART_COLUMNS))
    cur.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS").format(
            incoming, _ident(target, "_parts")
        )
    )
    count = 0
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(incoming, columns)) as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in PART_COLUMNS if c not in _KEY
    )
    cur.execute(
        sql.SQL(
            "INSERT INTO {parts} ({columns}) SELECT {columns} FROM {incoming} "
            "ON CONFLICT ON CONSTRAINT {key} DO UPDATE SET {updates}, written_at = now()"
        ).format(
            parts=_ident(target, "_parts"),
            columns=columns,
            incoming=incoming,
            key=sql.Identifier(target.table + "_parts_key"),
            updates=updates,
        )
    )
    return count


def _unique_by_key(rows: Iterable[Sequence[Any]]) -> list[Sequence[Any]]:
    """One row per part key, the last given winning (an upsert may touch a row once per statement)."""
    positions = [PART_COLUMNS.index(c) for c in _KEY]
    unique: dict[tuple, Sequence[Any]] = {}
    for row in rows:
        unique[tuple(row[i] for i in positions)] = row
    return list(unique.values())


def upsert_parts(conn, target: PostgresTarget, rows: Iterable[Sequence[Any]]) -> int:
    """Write part rows (``PART_COLUMNS`` order) in one transaction; returns how many were written."""
    rows = _unique_by_key(rows)
    if not rows:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        return _copy_and_merge(cur, target, rows)


def window_rows(conn, target: PostgresTarget, window_starts_ms: Sequence[int]) -> list[tuple]:
    """The view's rows of these windows: (window_start_ms, action_type, device_type, sessions,
    distinct_users, avg_secs_elapsed), ordered."""
    from psycopg import sql

    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT (extract(epoch FROM window_start) * 1000)::bigint, action_type, device_type, sessions, "
                "distinct_users, avg_secs_elapsed FROM {} "
                "WHERE window_start = ANY(SELECT to_timestamp(ms / 1000.0) FROM unnest(%s::bigint[]) AS ms) "
                "ORDER BY 1, 2 NULLS FIRST, 3 NULLS FIRST"
            ).format(_ident(target)),
            (list(window_starts_ms),),
        )
        return [tuple(row) for row in cur.fetchall()]


def foreign_parts(conn, target: PostgresTarget, window_starts_ms: Sequence[int], run_id: str) -> int:
    """Counted parts of these windows written by anyone but ``run_id`` (after a purge's replace: must be 0);
    a running run's staged parts do not count until it publishes."""
    from psycopg import sql

    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT count(*) FROM {} p JOIN {} r ON r.run_id = p.run_id AND r.state = 'committed' "
                "WHERE p.run_id <> %s "
                "AND p.window_start = ANY(SELECT to_timestamp(ms / 1000.0) FROM unnest(%s::bigint[]) AS ms)"
            ).format(_ident(target, "_parts"), _ident(target, "_runs")),
            (run_id, list(window_starts_ms)),
        )
        return int(cur.fetchone()[0])


def replace_windows(
    conn, target: PostgresTarget, run_id: str, window_starts_ms: Sequence[int], rows: Iterable[Sequence[Any]]
) -> tuple[int, int, int]:
    """Replace every part of these windows by ``rows`` (a purge's recomputation, committed as ``run_id``),
    in one transaction: readers see the old windows or the new, never both. Returns (sessions before,
    rows of the view before, parts deleted)."""
    from psycopg import sql

    starts = list(window_starts_ms)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"beam-rtbf:{target.label}",))
        before = window_rows(conn, target, starts)
        # The parts that count (committed runs'), not a running run's staged ones: they become visible when
        # its ledger publishes, with the run's files, and its manifests name those windows for the next purge.
        cur.execute(
            sql.SQL(
                "DELETE FROM {parts} p WHERE p.window_start = ANY(SELECT to_timestamp(ms / 1000.0) "
                "FROM unnest(%s::bigint[]) AS ms) "
                "AND NOT EXISTS (SELECT 1 FROM {runs} r WHERE r.run_id = p.run_id AND r.state = 'staged')"
            ).format(parts=_ident(target, "_parts"), runs=_ident(target, "_runs")),
            (starts,),
        )
        deleted = cur.rowcount
        _set_run_state(cur, target, run_id, COMMITTED)
        _copy_and_merge(cur, target, _unique_by_key(rows))
    return sum(int(r[3]) for r in before), len(before), deleted
