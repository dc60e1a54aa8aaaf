"""Analytics rows from the PostgreSQL table the analytics sink writes, for ``--analytics postgresql://``.

    postgresql://USER@HOST:PORT/DB?table=rtbf_analytics[&sslmode=...][&service=...]

The table (one row per window, action type and device type; primary key window_start,
action_type, device_type):

    window_start timestamptz, window_end timestamptz, action_type text, device_type text,
    sessions bigint, distinct_users bigint, avg_secs_elapsed double precision

The password comes from ``$RTBF_POSTGRES_PASSWORD`` (or libpq's own ``PGPASSWORD``,
``.pgpass`` or service file), never from the URL: a URL with a password is refused, as
the command line is visible to every user of the machine. Rows come back in
``data.ANALYTICS_SCHEMA``, times as the files write them (``2026-01-01T00:00:00.000Z``),
so every view works the same on either store. Reads are read-only transactions.
"""

from __future__ import annotations

import os

import pyarrow as pa

from beam_rtbf.dashboard.data import ANALYTICS_SCHEMA, AnalyticsFilters
from beam_rtbf.redact import mask_secrets
from beam_rtbf.sinks.postgres import DEFAULT_TABLE, PASSWORD_ENV, parse_sink

__all__ = ["PostgresAnalytics", "PASSWORD_ENV", "DEFAULT_TABLE", "parse_analytics_url", "AnalyticsUnavailable"]


class AnalyticsUnavailable(RuntimeError):
    """The analytics database cannot be read right now (the page says so; the rest still shows)."""


def parse_analytics_url(url: str) -> tuple[str, str]:
    """(libpq connection URL without ``table``, table name); ValueError for what cannot work.

    The sink's own parser (``sinks/postgres.parse_sink``): the dashboard reads exactly the tables
    ``run --analytics_sink`` can write, and refuses a password in the URL the same way."""
    try:
        target = parse_sink(url)
    except ValueError as exc:
        raise ValueError(str(exc).replace("--analytics_sink", "--analytics", 1)) from None
    return target.conninfo, target.label


class PostgresAnalytics:
    """Reads the analytics table; one short read-only connection per read."""

    def __init__(self, url: str, connect_timeout_s: int = 10) -> None:
        self._conninfo, self.table = parse_analytics_url(url)
        self._connect_timeout_s = connect_timeout_s
        self.url = url

    def _connect(self):
        import psycopg

        kwargs: dict = {"connect_timeout": self._connect_timeout_s, "autocommit": False}
        if os.environ.get(PASSWORD_ENV):
            kwargs["password"] = os.environ[PASSWORD_ENV]
        return psycopg.connect(self._conninfo, **kwargs)

    def read(self, filters: AnalyticsFilters = AnalyticsFilters()) -> pa.Table:
        """The table's rows that pass ``filters`` (filtered in the database), window order."""
        import psycopg
        from psycopg import sql

        where, params = [], []
        for column, values in (("action_type", filters.action_types), ("device_type", filters.device_types)):
            if values:
                where.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(column)))
                params.append(list(values))
        iso = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
        query = sql.SQL(
            "SELECT " + iso + ", " + iso + ", action_type, device_type, sessions, distinct_users, avg_secs_elapsed "
            "FROM {} {} ORDER BY window_start, action_type, device_type"
        ).format(
            sql.Identifier("window_start"),
            sql.Identifier("window_end"),
            sql.Identifier(*self.table.split(".")),
            sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
        )
        try:
            with self._connect() as conn:
                conn.read_only = True
                with conn.cursor() as cur:
                    cur.execute(query, params)
                    rows = cur.fetchall()
        except psycopg.Error as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise AnalyticsUnavailable(f"analytics table {self.table} unreadable: {mask_secrets(text)}") from None
        columns = list(zip(*rows)) if rows else [[] for _ in ANALYTICS_SCHEMA]
        return pa.table(
            {field.name: pa.array(list(values), field.type) for field, values in zip(ANALYTICS_SCHEMA, columns)},
            schema=ANALYTICS_SCHEMA,
        )
