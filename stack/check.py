"""`python -m stack check` (make check): is data flowing? Rows per result table, the newest window, and the
state of the Flink jobs, in a few lines."""

from __future__ import annotations

from marketpulse.config import Settings, postgres_dsn
from stack import flink
from stack.errors import StackError

TABLES = ("window_metrics", "anomalies", "late_trades", "dead_letters", "symbols")


def _query(settings: Settings, statements: list[str]) -> list[list[tuple]]:
    """Runs the statements on one connection; an unreachable database is one clear error."""
    import psycopg2

    try:
        conn = psycopg2.connect(postgres_dsn(settings, "reader"), connect_timeout=3)
    except psycopg2.OperationalError as err:
        reason = " ".join(str(err).split())  # psycopg2's message spans lines
        raise StackError(f"PostgreSQL is not reachable ({reason}): run `make up`") from None
    try:
        with conn.cursor() as cur:
            results = []
            for statement in statements:
                cur.execute(statement)
                results.append(cur.fetchall())
            return results
    finally:
        conn.close()


def table_counts(settings: Settings) -> dict[str, int]:
    results = _query(settings, [f"SELECT count(*) FROM {table}" for table in TABLES])
    return {table: rows[0][0] for table, rows in zip(TABLES, results, strict=True)}


def first_window_landed(settings: Settings, since: float) -> float | None:
    """When (epoch seconds, the database's clock) the first window row written since `since` landed."""
    rows = _query(settings, ["SELECT EXTRACT(EPOCH FROM min(landed_at)) FROM window_metrics "
                             f"WHERE landed_at >= to_timestamp({float(since)!r})"])[0]
    return float(rows[0][0]) if rows and rows[0][0] is not None else None


def newest_windows(settings: Settings) -> list[tuple]:
    """(engine, window_seconds, newest window end, symbols) per series in window_metrics."""
    return _query(settings, [
        "SELECT engine, window_seconds, max(window_end), count(DISTINCT symbol) "
        "FROM window_metrics GROUP BY engine, window_seconds ORDER BY engine, window_seconds"])[0]


def report(settings: Settings) -> str:
    counts = table_counts(settings)
    lines = ["rows: " + ", ".join(f"{table} {count}" for table, count in counts.items())]
    for engine, seconds, newest, symbols in newest_windows(settings):
        lines.append(f"newest {seconds}s window ({engine}): ends {newest:%Y-%m-%d %H:%M:%S %Z}, "
                     f"{symbols} symbols")
    overview = flink.overview(settings)
    if overview is None:
        lines.append(f"Flink: not reachable at {settings.flink.rest_url}")
    else:
        jobs = flink.rest(settings, "/jobs/overview")["jobs"]
        running = [job["name"] for job in jobs if job["state"] == "RUNNING"]
        lines.append(f"Flink jobs running: {', '.join(running) if running else 'none'}")
    return "\n".join(lines)
