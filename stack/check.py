"""`python -m stack check` (make check): is data flowing? Rows per result table, the newest window, and the
state of the Flink jobs, in a few lines."""

from __future__ import annotations

from marketpulse.config import Settings, postgres_dsn
from stack import flink
from stack.errors import StackError

TABLES = ("window_metrics", "anomalies", "late_trades", "dead_letters", "symbols")


def table_counts(settings: Settings) -> dict[str, int]:
    import psycopg2

    try:
        conn = psycopg2.connect(postgres_dsn(settings), connect_timeout=3)
    except psycopg2.OperationalError as err:
        raise StackError(f"PostgreSQL is not reachable ({str(err).strip()}): run `make up`") from None
    try:
        with conn.cursor() as cur:
            counts = {}
            for table in TABLES:
                cur.execute(f"SELECT count(*) FROM {table}")
                counts[table] = cur.fetchone()[0]
            return counts
    finally:
        conn.close()


def newest_window(settings: Settings) -> tuple | None:
    import psycopg2

    with psycopg2.connect(postgres_dsn(settings), connect_timeout=3) as conn, conn.cursor() as cur:
        cur.execute("SELECT engine, window_seconds, max(window_end), count(DISTINCT symbol) "
                    "FROM window_metrics GROUP BY engine, window_seconds ORDER BY engine, window_seconds")
        rows = cur.fetchall()
    conn.close()
    return rows


def report(settings: Settings) -> str:
    counts = table_counts(settings)
    lines = ["rows: " + ", ".join(f"{table} {count}" for table, count in counts.items())]
    for engine, seconds, newest, symbols in newest_window(settings):
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
