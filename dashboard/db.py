"""A lazily created, self-healing psycopg2 connection pool for the dashboard's read-only queries.

The pool is built on first use, so the app starts (and shows its "database unreachable" banner) while
PostgreSQL is down. A connection error closes the whole pool: after a database restart every pooled
connection is dead, and the next query builds a fresh pool instead of failing once per stale connection."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import psycopg2
import psycopg2.pool
from prometheus_client import Histogram


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached (or dropped the connection); the message is safe to show a user."""


class _BrokenConnection(DatabaseUnavailable):
    """A pooled connection failed mid-query (e.g. the server restarted since it was opened)."""


class Database:
    """Read-only access to the MarketPulse database: `frame(sql, params)` -> DataFrame.

    Sessions run in UTC with a statement timeout, so a slow query cannot hang a refresh."""

    def __init__(self, dsn: str, minconn: int = 4, maxconn: int = 10, connect_timeout: int = 3,
                 statement_timeout_ms: int = 5000):
        self.dsn = dsn
        # psycopg2 keeps at most `minconn` idle connections (it closes the rest when they come back).
        self.minconn = min(minconn, maxconn)
        self.maxconn = maxconn
        self._connect_kwargs = {
            "connect_timeout": connect_timeout,
            "application_name": "marketpulse-dashboard",
            "options": f"-c statement_timeout={statement_timeout_ms} -c TimeZone=UTC",
        }
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._lock = threading.Lock()
        # ThreadedConnectionPool raises when exhausted; the semaphore makes callers wait their turn instead.
        self._slots = threading.BoundedSemaphore(maxconn)
        self._tables: dict[str, tuple[float, bool]] = {}

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        with self._lock:
            if self._pool is None:
                try:
                    self._pool = psycopg2.pool.ThreadedConnectionPool(
                        self.minconn, self.maxconn, self.dsn, **self._connect_kwargs)
                except psycopg2.Error as err:
                    raise DatabaseUnavailable(_first_line(err)) from None
            return self._pool

    def _reset(self, broken: psycopg2.pool.ThreadedConnectionPool) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
                try:
                    broken.closeall()
                except psycopg2.Error:
                    pass

    @contextmanager
    def cursor(self) -> Iterator[psycopg2.extensions.cursor]:
        with self._slots:
            pool = self._get_pool()
            try:
                conn = pool.getconn()
            except psycopg2.Error as err:
                self._reset(pool)
                raise DatabaseUnavailable(_first_line(err)) from None
            try:
                if not conn.autocommit:
                    conn.set_session(readonly=True, autocommit=True)
                with conn.cursor() as cur:
                    yield cur
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as err:
                pool.putconn(conn, close=True)
                self._reset(pool)
                raise _BrokenConnection(_first_line(err)) from None
            except BaseException:
                pool.putconn(conn, close=bool(conn.closed))
                raise
            else:
                pool.putconn(conn)

    def _execute(self, sql: str, params) -> tuple[list[str], list[tuple]]:
        # The query's name on /metrics: the function that called frame(), rows() or query()
        # (dashboard.queries.*; a private helper is named as the public functions that share it).
        name = sys._getframe(2).f_code.co_name.lstrip("_")
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                with self.cursor() as cur:
                    cur.execute(sql, params)
                    result = [column.name for column in cur.description], cur.fetchall()
                QUERY_SECONDS.labels(name).observe(time.perf_counter() - started)
                return result
            except _BrokenConnection:
                # The pool was dropped; one retry on a fresh connection hides a database restart.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def frame(self, sql: str, params: dict | tuple | None = None) -> pd.DataFrame:
        columns, rows = self._execute(sql, params)
        return pd.DataFrame.from_records(rows, columns=columns)

    def query(self, sql: str, params: dict | tuple | None = None) -> tuple[list[str], list[tuple]]:
        """(column names, rows)."""
        return self._execute(sql, params)

    def rows(self, sql: str, params: dict | tuple | None = None) -> list[tuple]:
        return self._execute(sql, params)[1]

    def table_exists(self, name: str, ttl_seconds: float = 30.0) -> bool:
        """Whether a (public) table exists; cached, so optional tables (schema files other components
        add later, e.g. the Flink SQL job's indicators) are picked up without a restart."""
        now = time.monotonic()
        cached = self._tables.get(name)
        if cached and now - cached[0] < ttl_seconds:
            return cached[1]
        exists = bool(self.rows("SELECT to_regclass(%s) IS NOT NULL", (f"public.{name}",))[0][0])
        self._tables[name] = (now, exists)
        return exists

    def ping(self) -> str | None:
        """None when the database answers, else the reason it does not."""
        try:
            self.rows("SELECT 1")
        except DatabaseUnavailable as err:
            return str(err)
        return None

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.closeall()
                self._pool = None


# Prometheus: how long each dashboard query takes (the dashboard's /metrics, marketpulse.metrics).
QUERY_SECONDS = Histogram("marketpulse_dashboard_query_seconds",
                          "PostgreSQL query time of the dashboard, per query", ["query"],
                          buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))


def _first_line(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
