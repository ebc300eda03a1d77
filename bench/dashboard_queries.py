"""Latency of the dashboard's queries at scale: p50/p95 per callback, target p95 < 100 ms.

    .venv/bin/python bench/dashboard_queries.py [--windows 1000000] [--anomalies 100000] [--runs 30]

Steps (each printed): create a scratch database with the project's schema (db/schema/*.sql, including the
dashboard's indexes in 004_dashboard.sql); COPY in `--windows` window rows (20 symbols, engines datastream
and sql, 60 s and 10 s windows, about 2.5 days of event time in 2025) and `--anomalies` anomalies plus some
late trades and dead letters; ANALYZE; then time each callback's queries, exactly as the app calls them,
for the 15 min / 1 h / 1 day / all ranges (relative to the latest window) on the largest series
(datastream, 10 s windows) and the default one (datastream, 60 s); print p50/p95 and drop the database.
"""

from __future__ import annotations

import argparse
import copy
import io
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psycopg2  # noqa: E402

from dashboard import queries  # noqa: E402
from dashboard.db import Database  # noqa: E402
from marketpulse.config import load_settings, postgres_dsn  # noqa: E402
from stack.postgres import apply_schema  # noqa: E402

START = datetime(2025, 3, 10, 13, 30, tzinfo=UTC)
SYMBOLS = [f"S{i:02d}" for i in range(20)]
SERIES = [("datastream", 60), ("datastream", 10), ("sql", 60), ("sql", 10)]
RULES = list(queries.RULES)


def say(text: str) -> None:
    print(text, flush=True)


def connect(settings):
    conn = psycopg2.connect(postgres_dsn(settings, "owner"))
    conn.autocommit = True
    return conn


def copy_frame(cur, table: str, frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False)
    buffer.seek(0)
    cur.copy_expert(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN WITH (FORMAT csv)", buffer)


def window_frame(total: int, rng: np.random.Generator) -> tuple[pd.DataFrame, float]:
    """`total` window rows split over SERIES x SYMBOLS, every series covering the same time span."""
    per_second = sum(1 / seconds for _, seconds in SERIES) * len(SYMBOLS)
    span = total / per_second
    parts = []
    for engine, seconds in SERIES:
        count = int(span // seconds)
        starts = pd.date_range(START, periods=count, freq=f"{seconds}s")
        for n, symbol in enumerate(SYMBOLS):
            walk = 100 + n * 10 + np.cumsum(rng.normal(0, 0.05, count))
            open_ = np.roll(walk, 1)
            open_[0] = walk[0]
            volume = rng.integers(100, 5000, count)
            trades = rng.integers(5, 80, count)
            high = np.maximum(open_, walk) + 0.02
            low = np.minimum(open_, walk) - 0.02
            vwap = (open_ + walk) / 2
            parts.append(pd.DataFrame({
                "engine": engine, "symbol": symbol, "window_seconds": seconds,
                "window_start": starts, "window_end": starts + pd.Timedelta(seconds=seconds),
                "open": open_, "high": high, "low": low, "close": walk, "vwap": vwap, "volume": volume,
                "notional": vwap * volume, "trade_count": trades, "buy_count": trades // 2,
                "sell_count": trades - trades // 2, "min_price": low, "max_price": high, "avg_price": vwap,
                "stddev_price": 0.01}))
    return pd.concat(parts, ignore_index=True), span


def anomaly_frame(total: int, span: float, rng: np.random.Generator) -> pd.DataFrame:
    times = START + pd.to_timedelta(np.sort(rng.uniform(0, span, total)), unit="s")
    return pd.DataFrame({
        "trade_id": [f"b{i}" for i in range(total)], "rule": rng.choice(RULES, total),
        "symbol": rng.choice(SYMBOLS, total), "event_time": times, "price": rng.uniform(90, 300, total),
        "size": rng.integers(1, 10_000, total), "z_score": rng.normal(6, 1, total), "mean": 100.0,
        "stddev": 0.5, "detected_at": times})


def seed(settings, windows: int, anomalies: int) -> float:
    rng = np.random.default_rng(7)
    frame, span = window_frame(windows, rng)
    say(f"  COPY {len(frame):,} window rows ({span / 86400:.2f} days of event time per series)")
    with closing(connect(settings)) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        cur.executemany("INSERT INTO symbols (symbol, company, sector, exchange, start_price) "
                        "VALUES (%s, %s, 'Bench', 'XBEN', 100)", [(s, f"Company {s}") for s in SYMBOLS])
        copy_frame(cur, "window_metrics", frame)
        say(f"    {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        copy_frame(cur, "anomalies", anomaly_frame(anomalies, span, rng))
        late = anomaly_frame(10_000, span, rng)
        copy_frame(cur, "late_trades", pd.DataFrame({
            "engine": "datastream", "trade_id": late["trade_id"], "symbol": late["symbol"],
            "price": late["price"], "size": late["size"], "side": "buy", "event_time": late["event_time"]}))
        copy_frame(cur, "dead_letters", pd.DataFrame({
            "engine": "datastream", "payload_sha1": [uuid.uuid4().hex for _ in range(5000)], "payload": "{",
            "reason": rng.choice(["invalid JSON", "missing field price", "negative size"], 5000),
            "topic": "trades", "received_at": late["event_time"][:5000]}))
        say(f"  COPY {anomalies:,} anomalies, 10,000 late trades, 5,000 dead letters: "
            f"{time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        cur.execute("VACUUM ANALYZE")
        say(f"  VACUUM ANALYZE: {time.perf_counter() - started:.1f} s")
    return span


def callbacks(db: Database, engine: str, seconds: int, range_key: str) -> dict[str, Callable[[], object]]:
    """Each dashboard callback's database work, as app.py does it."""
    available = queries.series(db)
    row = available[(available.engine == engine) & (available.window_seconds == seconds)].iloc[0]
    window = queries.resolve_window(range_key, "latest", row.earliest_start.to_pydatetime(),
                                    row.latest_end.to_pydatetime())
    symbol = SYMBOLS[3]

    def symbol_view():
        frame, _ = queries.candles(db, engine, seconds, symbol, window.start, window.end)
        first = frame["window_start"].iloc[0].to_pydatetime()
        queries.anomalies(db, symbol=symbol, start=first, end=window.end, limit=5000)

    def anomalies_view():
        queries.anomalies(db, start=window.start, end=window.end, limit=200)
        queries.anomaly_timeline(db, window.start, window.end,
                                 queries.bucket_seconds(window.seconds, 1, points=60))

    def anomalies_filtered():
        queries.anomalies(db, symbol=symbol, rule="price_jump", start=window.start, end=window.end, limit=200)
        queries.anomaly_timeline(db, window.start, window.end,
                                 queries.bucket_seconds(window.seconds, 1, points=60), symbol, "price_jump")

    def health_view():
        queries.pipeline_counts(db, window.start, window.end)
        queries.dead_letter_reasons(db)

    return {
        "context (series + symbols)": lambda: (queries.series(db), queries.symbols(db)),
        "overview (cards, watchlist, charts)": lambda: queries.overview(db, engine, seconds, window),
        "symbol (candles + markers)": symbol_view,
        "anomalies (table + timeline)": anomalies_view,
        "anomalies filtered (symbol+rule)": anomalies_filtered,
        "health (late + dead letters)": health_view,
        "api /metrics (1000 rows)": lambda: queries.candles(db, engine, seconds, symbol, window.start,
                                                             window.end, limit=1000),
    }


def measure(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()  # warm-up: plan cache, pool
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]
    return statistics.median(samples), p95


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=1_000_000)
    parser.add_argument("--anomalies", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--target-ms", type=float, default=100.0)
    args = parser.parse_args()
    settings = load_settings()
    scratch = copy.deepcopy(settings)
    scratch.postgres.database = f"mp_bench_{uuid.uuid4().hex[:8]}"
    say(f"scratch database {scratch.postgres.database}")
    with closing(connect(settings)) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{scratch.postgres.database}"')
    slow = []
    try:
        say(f"  schema: {', '.join(apply_schema(scratch))}")
        seed(scratch, args.windows, args.anomalies)
        db = Database(postgres_dsn(scratch, "reader"))
        for engine, seconds in (("datastream", 10), ("datastream", 60)):
            say(f"\n{engine}, {seconds} s windows — p50 / p95 in ms over {args.runs} runs")
            ranges = ("15m", "1h", "1d", "all")
            say(f"  {'callback':<38}" + "".join(f"{queries.RANGE_LABELS[k]:>18}" for k in ranges))
            results: dict[str, list[str]] = {}
            for range_key in ranges:
                for name, fn in callbacks(db, engine, seconds, range_key).items():
                    p50, p95 = measure(fn, args.runs)
                    if p95 >= args.target_ms:
                        slow.append(f"{engine}/{seconds}s {range_key} {name}: p95 {p95:.1f} ms")
                    flag = "!" if p95 >= args.target_ms else " "
                    results.setdefault(name, []).append(f"{p50:7.1f} / {p95:6.1f}{flag}")
            for name, cells in results.items():
                say(f"  {name:<38}" + "".join(f"{c:>18}" for c in cells))
        db.close()
    finally:
        with closing(connect(settings)) as conn, conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{scratch.postgres.database}" WITH (FORCE)')
        say(f"\ndropped {scratch.postgres.database}")
    if slow:
        say(f"p95 over the {args.target_ms:.0f} ms target (marked !):\n  " + "\n  ".join(slow))
        return 1
    say(f"every callback's p95 is under {args.target_ms:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
