"""The dashboard's SQL: parameterized queries over `dashboard.db.Database`, each returning a DataFrame.

Time ranges are half-open, [start, end), on `window_start` for window rows and on `event_time` for
anomalies. All timestamps are timezone-aware UTC. The indexes these queries rely on are in
db/schema/001_core.sql and db/schema/004_dashboard.sql; bench/dashboard_queries.py times them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pandas as pd

from dashboard.db import Database
from marketpulse.analytics import WINDOW_METRICS_COLUMNS
from marketpulse.analytics.detector import RULES  # noqa: F401 (the rule filter's choices: queries.RULES)
from marketpulse.analytics.scoring import DETECTOR_ENGINE, LABEL_KINDS

ENGINES = ("datastream", "sql")
RANGES = {"5m": 300, "15m": 900, "1h": 3600, "1d": 86400, "all": None}
RANGE_LABELS = {"5m": "5 min", "15m": "15 min", "1h": "1 h", "1d": "1 day", "all": "All"}
MAX_CANDLES = 1500
SPARK_POINTS = 48
# The watchlist's sparklines show the last hour's shape whatever the selected range: a 5 min range gives too
# few points to see a trend, a day too coarse a one to see the last hour's.
SPARK_SECONDS = 3600

# A window row without its series key (symbol, window_seconds): the window and its values.
WINDOW_COLUMNS = WINDOW_METRICS_COLUMNS[2:]
ANOMALY_COLUMNS = ("event_time", "symbol", "rule", "price", "size", "z_score", "mean", "stddev",
                   "trade_id", "detected_at")


# --- which data exists ---------------------------------------------------------------------------

def series(db: Database) -> pd.DataFrame:
    """One row per (engine, window_seconds) present, with its earliest and latest window.

    A loose index scan (recursive CTE) walks the distinct pairs without reading every row."""
    return db.frame("""
        WITH RECURSIVE pairs AS (
            (SELECT engine, window_seconds FROM window_metrics ORDER BY engine, window_seconds LIMIT 1)
            UNION ALL
            SELECT nxt.engine, nxt.window_seconds
            FROM pairs p CROSS JOIN LATERAL (
                SELECT w.engine, w.window_seconds FROM window_metrics w
                WHERE (w.engine, w.window_seconds) > (p.engine, p.window_seconds)
                ORDER BY w.engine, w.window_seconds LIMIT 1) nxt
        )
        SELECT p.engine, p.window_seconds,
               (SELECT min(w.window_start) FROM window_metrics w
                 WHERE w.engine = p.engine AND w.window_seconds = p.window_seconds) AS earliest_start,
               (SELECT max(w.window_start) FROM window_metrics w
                 WHERE w.engine = p.engine AND w.window_seconds = p.window_seconds)
                 + make_interval(secs => p.window_seconds) AS latest_end
        FROM pairs p ORDER BY p.engine, p.window_seconds""")


def symbols(db: Database) -> pd.DataFrame:
    """Every symbol the reference table or the window rows know, with its company when known."""
    return db.frame("""
        WITH RECURSIVE seen AS (
            (SELECT engine, symbol FROM window_metrics ORDER BY engine, symbol LIMIT 1)
            UNION ALL
            SELECT nxt.engine, nxt.symbol
            FROM seen s CROSS JOIN LATERAL (
                SELECT w.engine, w.symbol FROM window_metrics w
                WHERE (w.engine, w.symbol) > (s.engine, s.symbol)
                ORDER BY w.engine, w.symbol LIMIT 1) nxt
        )
        SELECT coalesce(r.symbol, x.symbol) AS symbol, r.company, r.sector, r.exchange
        FROM symbols r FULL JOIN (SELECT DISTINCT symbol FROM seen) x ON x.symbol = r.symbol
        ORDER BY 1""")


def symbol_known(db: Database, symbol: str) -> bool:
    return bool(db.rows("""
        SELECT EXISTS (SELECT 1 FROM symbols WHERE symbol = %(s)s)
            OR EXISTS (SELECT 1 FROM window_metrics WHERE engine = ANY(%(engines)s) AND symbol = %(s)s)
            OR EXISTS (SELECT 1 FROM anomalies WHERE symbol = %(s)s)""",
        {"s": symbol, "engines": list(ENGINES)})[0][0])


# --- time ranges ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TimeWindow:
    """The [start, end) the views show. `anchor` says what `end` is: the latest window in the
    database ("latest": works for historical/demo data) or the wall clock ("now")."""

    start: datetime | None
    end: datetime | None
    anchor: str
    range_key: str

    @property
    def seconds(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return (self.end - self.start).total_seconds()


def resolve_window(range_key: str, anchor: str, earliest: datetime | None, latest: datetime | None,
                   now: datetime | None = None) -> TimeWindow:
    """Turns the range control (5m..all) and the anchor into concrete bounds. Pure.

    With anchor "latest" and no data yet, both bounds are None (every query then returns nothing
    rather than guessing a range)."""
    if range_key not in RANGES:
        raise ValueError(f"unknown range {range_key!r}; one of {', '.join(RANGES)}")
    if anchor == "now":
        end = (now or datetime.now(UTC)).replace(microsecond=0)
    elif anchor == "latest":
        end = latest
    else:
        raise ValueError(f"unknown anchor {anchor!r}; 'latest' or 'now'")
    if end is None:
        return TimeWindow(None, None, anchor, range_key)
    span = RANGES[range_key]
    if span is None:
        start = earliest if earliest is not None and earliest < end else end - timedelta(seconds=1)
    else:
        start = end - timedelta(seconds=span)
    return TimeWindow(start, end, anchor, range_key)


def bucket_seconds(span_seconds: float, window_seconds: int, points: int = SPARK_POINTS) -> int:
    """A bucket width that splits `span` into about `points` buckets, a whole number of windows."""
    windows = max(1, -(-int(span_seconds) // (window_seconds * points)))
    return windows * window_seconds


# --- market overview -----------------------------------------------------------------------------

@dataclass
class Overview:
    totals: dict[str, float] = field(default_factory=dict)
    watchlist: pd.DataFrame = field(default_factory=pd.DataFrame)
    sparklines: dict[str, list[float]] = field(default_factory=dict)


def overview_buckets(db: Database, engine: str, window_seconds: int, start: datetime, end: datetime,
                     step_seconds: int) -> pd.DataFrame:
    """Per symbol and time bucket: mean close, volume, notional, trades and window count."""
    return db.frame("""
        SELECT symbol,
               date_bin(make_interval(secs => %(step)s), window_start, %(start)s) AS bucket,
               avg(close) AS close, sum(volume)::bigint AS volume, sum(notional) AS notional,
               sum(trade_count)::bigint AS trades, count(*) AS windows
        FROM window_metrics
        WHERE engine = %(engine)s AND window_seconds = %(ws)s
          AND window_start >= %(start)s AND window_start < %(end)s
        GROUP BY 1, 2 ORDER BY 1, 2""",
        {"engine": engine, "ws": window_seconds, "start": start, "end": end, "step": step_seconds})


ROLLUP_MIN_SECONDS = 6 * 3600


def overview_buckets_rollup(db: Database, engine: str, window_seconds: int, start: datetime, end: datetime,
                            step_seconds: int) -> pd.DataFrame:
    """overview_buckets for long ranges: whole UTC hours from window_metrics_hourly (004_dashboard.sql),
    raw windows only for the partial hours at both ends. Same columns; buckets are whole hours."""
    first_hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if first_hour < start:
        first_hour += timedelta(hours=1)
    last_hour = end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    step = max(3600, -(-step_seconds // 3600) * 3600)
    return db.frame("""
        SELECT symbol, date_bin(make_interval(secs => %(step)s), t, %(h0)s) AS bucket,
               sum(close_sum) / sum(windows) AS close, sum(volume)::bigint AS volume,
               sum(notional) AS notional, sum(trade_count)::bigint AS trades, sum(windows) AS windows
        FROM (
            SELECT symbol, window_start AS t, 1::bigint AS windows, volume, notional, trade_count,
                   close AS close_sum
            FROM window_metrics
            WHERE engine = %(engine)s AND window_seconds = %(ws)s
              AND ((window_start >= %(start)s AND window_start < %(h0)s)
                OR (window_start >= %(h1)s AND window_start < %(end)s))
            UNION ALL
            SELECT symbol, hour, windows, volume, notional, trade_count, close_sum
            FROM window_metrics_hourly
            WHERE engine = %(engine)s AND window_seconds = %(ws)s AND hour >= %(h0)s AND hour < %(h1)s
              AND windows > 0
        ) parts
        GROUP BY 1, 2 ORDER BY 1, 2""",
        {"engine": engine, "ws": window_seconds, "start": start, "end": end, "h0": first_hour,
         "h1": last_hour, "step": step})


def first_last(db: Database, engine: str, window_seconds: int, start: datetime, end: datetime,
               symbol_list: list[str]) -> pd.DataFrame:
    """Per symbol: the first window's open and the last window's close in the range (index lookups)."""
    return db.frame("""
        SELECT s.symbol, f.open AS first_open, f.window_start AS first_start,
               l.close AS last_close, l.window_start AS last_start
        FROM unnest(%(symbols)s::text[]) AS s(symbol)
        CROSS JOIN LATERAL (
            SELECT open, window_start FROM window_metrics w
            WHERE w.engine = %(engine)s AND w.symbol = s.symbol AND w.window_seconds = %(ws)s
              AND w.window_start >= %(start)s AND w.window_start < %(end)s
            ORDER BY w.window_start ASC LIMIT 1) f
        CROSS JOIN LATERAL (
            SELECT close, window_start FROM window_metrics w
            WHERE w.engine = %(engine)s AND w.symbol = s.symbol AND w.window_seconds = %(ws)s
              AND w.window_start >= %(start)s AND w.window_start < %(end)s
            ORDER BY w.window_start DESC LIMIT 1) l
        ORDER BY s.symbol""",
        {"engine": engine, "ws": window_seconds, "start": start, "end": end, "symbols": symbol_list})


def anomaly_counts_by_symbol(db: Database, start: datetime, end: datetime) -> pd.DataFrame:
    return db.frame("""
        SELECT symbol, count(*) AS anomalies FROM anomalies
        WHERE engine = %(engine)s AND event_time >= %(start)s AND event_time < %(end)s
        GROUP BY symbol ORDER BY symbol""", {"start": start, "end": end, "engine": DETECTOR_ENGINE})


def sparkline_span(window_end: datetime, last_starts, window_seconds: int) -> tuple[datetime, datetime]:
    """[start, end) of the sparklines: the hour ending at the newest window the view shows (its rows' last
    close), never after the view's end. Not the newest window in the database: on a past range (anchor
    "now" over old data, a long range) the line must end where the row's "Last" comes from. Pure."""
    newest = pd.Timestamp(max(last_starts)).to_pydatetime()
    end = min(window_end, newest + timedelta(seconds=window_seconds))
    return end - timedelta(seconds=SPARK_SECONDS), end


def overview(db: Database, engine: str, window_seconds: int, window: TimeWindow) -> Overview:
    """Cards, watchlist rows and sparklines for the market overview, from four queries (three when the
    range is the sparklines' hour)."""
    if window.start is None or window.end is None:
        return Overview(totals=_empty_totals(), watchlist=_empty_watchlist())
    step = bucket_seconds(window.seconds or window_seconds, window_seconds)
    if (window.seconds or 0) >= ROLLUP_MIN_SECONDS and db.table_exists("window_metrics_hourly"):
        buckets = overview_buckets_rollup(db, engine, window_seconds, window.start, window.end, step)
    else:
        buckets = overview_buckets(db, engine, window_seconds, window.start, window.end, step)
    counts = anomaly_counts_by_symbol(db, window.start, window.end)
    names = db.frame("SELECT symbol, company FROM symbols")
    if buckets.empty:
        totals = _empty_totals()
        totals["anomalies"] = int(counts["anomalies"].sum()) if not counts.empty else 0
        return Overview(totals=totals, watchlist=_empty_watchlist())
    edges = first_last(db, engine, window_seconds, window.start, window.end,
                       sorted(buckets["symbol"].unique()))
    spark_start, spark_end = sparkline_span(window.end, edges["last_start"], window_seconds)
    spark_step = bucket_seconds(SPARK_SECONDS, window_seconds)
    if (spark_start, spark_end, spark_step) == (window.start, window.end, step):
        spark = buckets  # the range is the last hour: the same query
    else:
        spark = overview_buckets(db, engine, window_seconds, spark_start, spark_end, spark_step)
    return summarize(buckets, edges, counts, names, spark)


def summarize(buckets: pd.DataFrame, edges: pd.DataFrame, counts: pd.DataFrame,
              names: pd.DataFrame, spark_buckets: pd.DataFrame | None = None) -> Overview:
    """Combines the overview queries' frames into totals, watchlist and sparklines (from `spark_buckets`,
    the last hour's buckets; none without them). Pure. Plain Python over the (few hundred) rows: pandas'
    groupby and merges of ten-row frames cost ~10 ms of CPU per overview render."""
    sums: dict[str, list] = {}  # symbol -> [volume, notional, trades]
    columns = (pd.to_numeric(buckets[c]).tolist() for c in ("volume", "notional", "trades"))
    for symbol, *values in zip(buckets["symbol"].tolist(), *columns, strict=True):
        total = sums.setdefault(symbol, [0, 0, 0])
        for i, value in enumerate(values):
            if value == value:  # NaN: left out, as pandas' sum does
                total[i] += value
    edge = {row["symbol"]: row for row in edges.to_dict("records")}
    company = dict(zip(names["symbol"].tolist(), names["company"].tolist(), strict=True))
    flagged = dict(zip(counts["symbol"].tolist(), pd.to_numeric(counts["anomalies"]).tolist(), strict=True)) \
        if not counts.empty else {}
    rows = []
    for symbol in sorted(sums):
        volume, notional, trades = sums[symbol]
        first_last = edge.get(symbol, {})
        first_open, last_close = (_number(first_last.get(key)) for key in ("first_open", "last_close"))
        anomalies = flagged.get(symbol)
        rows.append({"symbol": symbol, "company": company.get(symbol) or "", "last_close": last_close,
                     "change_pct": (last_close / first_open - 1.0) * 100.0 if first_open else math.nan,
                     "vwap": notional / volume if volume > 0 else math.nan, "volume": volume,
                     "notional": notional, "trades": trades,
                     "anomalies": int(anomalies) if anomalies is not None and anomalies == anomalies else 0,
                     "first_open": first_open, "last_start": first_last.get("last_start")})
    watch = pd.DataFrame(rows, columns=list(WATCHLIST_COLUMNS))
    totals = {
        "trades": int(sum(total[2] for total in sums.values())),
        "volume": int(sum(total[0] for total in sums.values())),
        "notional": float(sum(total[1] for total in sums.values())),
        "symbols": len(sums),
        "anomalies": int(sum(v for v in flagged.values() if v == v)),
    }
    sparklines: dict[str, list[float]] = {}
    if spark_buckets is not None:
        points: dict[str, list] = {}
        for symbol, bucket, close in zip(spark_buckets["symbol"].tolist(), spark_buckets["bucket"].tolist(),
                                         spark_buckets["close"].tolist(), strict=True):
            points.setdefault(symbol, []).append((bucket, close))
        sparklines = {symbol: [float(close) for _, close in sorted(pairs, key=lambda pair: pair[0])]
                      for symbol, pairs in sorted(points.items())}
    return Overview(totals=totals, watchlist=watch, sparklines=sparklines)


def _number(value) -> float:
    return math.nan if value is None else float(value)


def _empty_totals() -> dict[str, float]:
    return {"trades": 0, "volume": 0, "notional": 0.0, "symbols": 0, "anomalies": 0}


WATCHLIST_COLUMNS = ("symbol", "company", "last_close", "change_pct", "vwap", "volume", "notional", "trades",
                     "anomalies", "first_open", "last_start")


def _empty_watchlist() -> pd.DataFrame:
    return pd.DataFrame(columns=list(WATCHLIST_COLUMNS))


# --- one symbol ----------------------------------------------------------------------------------

def iso_text(column: str) -> str:
    """SQL: a timestamptz `column` as the JSON API's text (dashboard.api.iso): UTC, ISO-8601 with a 'Z',
    microseconds only when not whole. PostgreSQL writes it, so the API reads no datetime objects."""
    iso = "'YYYY-MM-DD\"T\"HH24:MI:SS{}\"Z\"'"
    return (f"CASE WHEN {column} = date_trunc('second', {column}) "
            f"THEN to_char({column} AT TIME ZONE 'UTC', {iso.format('')}) "
            f"ELSE to_char({column} AT TIME ZONE 'UTC', {iso.format('.US')}) END")


def _select(columns, time_columns=(), api: bool = False) -> str:
    """A select list of `columns`; for the API (`api`) its `time_columns` as iso_text."""
    return ", ".join(f"{iso_text(c)} AS {c}" if api and c in time_columns else c for c in columns)


def _candles(db: Database, engine: str, window_seconds: int, symbol: str, start: datetime | None,
             end: datetime | None, limit: int, api: bool) -> tuple[list[str], list[tuple], bool]:
    columns, rows = db.query(f"""
        SELECT {_select(WINDOW_COLUMNS, ("window_start", "window_end"), api)} FROM (
            SELECT {", ".join(WINDOW_COLUMNS)} FROM window_metrics
            WHERE engine = %(engine)s AND symbol = %(symbol)s AND window_seconds = %(ws)s
              AND (%(start)s::timestamptz IS NULL OR window_start >= %(start)s)
              AND (%(end)s::timestamptz IS NULL OR window_start < %(end)s)
            ORDER BY window_start DESC LIMIT %(limit)s
        ) latest ORDER BY latest.window_start""",
        {"engine": engine, "symbol": symbol, "ws": window_seconds, "start": start, "end": end,
         "limit": limit + 1})
    truncated = len(rows) > limit
    return columns, rows[1:] if truncated else rows, truncated


def candles(db: Database, engine: str, window_seconds: int, symbol: str, start: datetime | None,
            end: datetime | None, limit: int = MAX_CANDLES) -> tuple[pd.DataFrame, bool]:
    """The symbol's windows in [start, end), oldest first: the latest `limit` of them, and whether
    the range held more (the caller says so on screen rather than silently dropping candles)."""
    columns, rows, truncated = _candles(db, engine, window_seconds, symbol, start, end, limit, api=False)
    frame = pd.DataFrame.from_records(rows, columns=columns)
    return _numeric(frame, WINDOW_COLUMNS[2:]), truncated


def candle_records(db: Database, engine: str, window_seconds: int, symbol: str, start: datetime | None,
                   end: datetime | None, limit: int) -> tuple[list[dict], bool]:
    """candles() as the JSON API's rows: one dict per window, times as iso_text. No DataFrame: a 1,000-row
    /api/metrics spent two thirds of its CPU turning rows into a frame and back."""
    columns, rows, truncated = _candles(db, engine, window_seconds, symbol, start, end, limit, api=True)
    return [dict(zip(columns, row, strict=True)) for row in rows], truncated


# The Flink SQL job's per-bar indicators as the figure names them (indicators table column -> name).
INDICATOR_COLUMNS = {"sma": "sma", "bollinger_upper": "bb_upper", "bollinger_lower": "bb_lower",
                     "sma_long": "sma_long", "ewma": "ewma", "ema_fast": "ema_fast", "ema_slow": "ema_slow",
                     "rsi": "rsi", "macd": "macd", "macd_signal": "macd_signal",
                     "macd_histogram": "macd_histogram", "volatility": "volatility"}


def indicators(db: Database, symbol: str, bar_seconds: int, start: datetime | None,
               end: datetime | None) -> pd.DataFrame:
    """The Flink SQL job's indicators (003_sql_analytics.sql, 010_indicators_macd.sql) for one symbol, renamed
    for the figure; empty when the table does not exist (yet) or holds nothing for this symbol and bar
    size."""
    if not db.table_exists("indicators"):
        return pd.DataFrame()
    columns = ", ".join(f"{column} AS {name}" for column, name in INDICATOR_COLUMNS.items())
    frame = db.frame(f"""
        SELECT bar_start AS window_start, {columns}
        FROM indicators
        WHERE symbol = %(symbol)s AND bar_seconds = %(bars)s
          AND (%(start)s::timestamptz IS NULL OR bar_start >= %(start)s)
          AND (%(end)s::timestamptz IS NULL OR bar_start < %(end)s)
        ORDER BY bar_start""", {"symbol": symbol, "bars": bar_seconds, "start": start, "end": end})
    frame = _numeric(frame, INDICATOR_COLUMNS.values())
    if frame.empty or frame[list(INDICATOR_COLUMNS.values())].isna().all().all():
        return pd.DataFrame()
    return frame


def moving_averages(db: Database, symbol: str, window_seconds: int, slide_seconds: int,
                    start: datetime | None, end: datetime | None) -> pd.DataFrame:
    """The Flink SQL job's sliding (HOP) windows of one symbol whose last slide starts in [start, end)
    (window_end - slide: where the figure draws them), oldest first; empty without the table."""
    if not db.table_exists("moving_averages"):
        return pd.DataFrame()
    frame = db.frame("""
        SELECT window_end, window_seconds, slide_seconds, avg_price, vwap, volume, trade_count
        FROM moving_averages
        WHERE symbol = %(symbol)s AND window_seconds = %(ws)s AND slide_seconds = %(slide)s
          AND (%(start)s::timestamptz IS NULL
               OR window_end >= %(start)s::timestamptz + make_interval(secs => %(slide)s))
          AND (%(end)s::timestamptz IS NULL
               OR window_end < %(end)s::timestamptz + make_interval(secs => %(slide)s))
        ORDER BY window_end""", {"symbol": symbol, "ws": window_seconds, "slide": slide_seconds,
                                 "start": start, "end": end})
    return _numeric(frame, ("avg_price", "vwap"))


def forecast(db: Database, symbol: str, bar_seconds: int, first: datetime | None,
             last: datetime | None) -> pd.DataFrame:
    """The forecaster's newest forecast (011_forecasts.sql) of one symbol made from a bar in [first, last]
    (the candles shown), every model and horizon, by model and target; empty without the table or one."""
    if first is None or last is None or not db.table_exists("forecasts"):
        return pd.DataFrame()
    frame = db.frame("""
        WITH newest AS (
            SELECT max(origin_start) AS origin_start FROM forecasts
            WHERE symbol = %(symbol)s AND bar_seconds = %(bars)s
              AND origin_start >= %(first)s AND origin_start <= %(last)s)
        SELECT f.model, f.spec, f.bar_seconds, f.origin_start, f.origin_close, f.target_start, f.horizon,
               f.point, f.lower, f.upper, f.level, f.actual
        FROM forecasts f JOIN newest n ON f.origin_start = n.origin_start
        WHERE f.symbol = %(symbol)s AND f.bar_seconds = %(bars)s
        ORDER BY f.model, f.target_start""",
        {"symbol": symbol, "bars": bar_seconds, "first": first, "last": last})
    return _numeric(frame, ("origin_close", "point", "lower", "upper", "level", "actual"))


def forecast_errors(db: Database, symbol: str, bar_seconds: int) -> pd.DataFrame:
    """The forecaster's error figures of one symbol per model (011_forecasts.sql); empty without them."""
    if not db.table_exists("forecast_errors"):
        return pd.DataFrame()
    frame = db.frame("""
        SELECT model, spec, forecasts, mae, mape, coverage, level, first_target, last_target
        FROM forecast_errors WHERE symbol = %(symbol)s AND bar_seconds = %(bars)s ORDER BY model""",
        {"symbol": symbol, "bars": bar_seconds})
    return _numeric(frame, ("mae", "mape", "coverage", "level"))


def sql_top_movers(db: Database, window_seconds: int, start: datetime | None,
                   end: datetime | None) -> pd.DataFrame:
    """The Flink SQL job's gainers and losers (003_sql_analytics.sql) of its latest window in the range:
    symbol, change_pct, window_start, window_end. Empty when the table is absent or has no such window."""
    if start is None or end is None or not db.table_exists("top_movers"):
        return pd.DataFrame()
    frame = db.frame("""
        WITH latest AS (
            SELECT max(window_start) AS window_start FROM top_movers
            WHERE ranking = 'gainers' AND window_seconds = %(ws)s
              AND window_start >= %(start)s AND window_start < %(end)s)
        SELECT DISTINCT ON (t.symbol) t.symbol, t.pct_change AS change_pct, t.window_start, t.window_end
        FROM top_movers t JOIN latest l ON t.window_start = l.window_start
        WHERE t.ranking IN ('gainers', 'losers') AND t.window_seconds = %(ws)s
        ORDER BY t.symbol""", {"ws": window_seconds, "start": start, "end": end})
    return _numeric(frame, ("change_pct",))


def _anomalies(db: Database, symbol: str | None, rule: str | None, start: datetime | None,
               end: datetime | None, limit: int, api: bool) -> tuple[list[str], list[tuple]]:
    return db.query(f"""
        SELECT {_select(ANOMALY_COLUMNS, ("event_time", "detected_at"), api)} FROM anomalies
        WHERE engine = %(engine)s AND (%(symbol)s::text IS NULL OR symbol = %(symbol)s)
          AND (%(rule)s::text IS NULL OR rule = %(rule)s)
          AND (%(start)s::timestamptz IS NULL OR event_time >= %(start)s)
          AND (%(end)s::timestamptz IS NULL OR event_time < %(end)s)
        ORDER BY anomalies.event_time DESC, trade_id, rule LIMIT %(limit)s""",
        {"symbol": symbol, "rule": rule, "start": start, "end": end, "limit": limit,
         "engine": DETECTOR_ENGINE})


def anomalies(db: Database, symbol: str | None = None, rule: str | None = None,
              start: datetime | None = None, end: datetime | None = None, limit: int = 500) -> pd.DataFrame:
    """The detector's anomalies (DETECTOR_ENGINE) newest first, optionally for one symbol and/or one rule, in
    [start, end)."""
    columns, rows = _anomalies(db, symbol, rule, start, end, limit, api=False)
    frame = pd.DataFrame.from_records(rows, columns=columns)
    return _numeric(frame, ("price", "size", "z_score", "mean", "stddev"))


def anomaly_records(db: Database, symbol: str | None, rule: str | None, start: datetime | None,
                    end: datetime | None, limit: int) -> list[dict]:
    """anomalies() as the JSON API's rows (times as iso_text), without a DataFrame."""
    columns, rows = _anomalies(db, symbol, rule, start, end, limit, api=True)
    return [dict(zip(columns, row, strict=True)) for row in rows]


def window_anomalies(db: Database, symbol: str, start: datetime | None, end: datetime | None,
                     limit: int = 2000) -> pd.DataFrame:
    """The multivariate detector's anomalous windows of one symbol overlapping [start, end), oldest first:
    window_start, window_end, score, threshold, top_features. Empty without the table (before 012)."""
    columns = ["window_start", "window_end", "score", "threshold", "top_features"]
    if not db.table_exists("window_anomalies"):
        return pd.DataFrame(columns=columns)
    frame = db.frame(f"""
        SELECT {", ".join(columns)} FROM window_anomalies
        WHERE anomalous AND symbol = %(symbol)s
          AND (%(start)s::timestamptz IS NULL OR window_end > %(start)s)
          AND (%(end)s::timestamptz IS NULL OR window_start < %(end)s)
        ORDER BY window_start LIMIT %(limit)s""",
        {"symbol": symbol, "start": start, "end": end, "limit": limit})
    return _numeric(frame, ("score", "threshold"))


def anomaly_timeline(db: Database, start: datetime, end: datetime, step_seconds: int,
                     symbol: str | None = None, rule: str | None = None) -> pd.DataFrame:
    """Anomaly counts per time bucket and rule in [start, end)."""
    return db.frame("""
        SELECT date_bin(make_interval(secs => %(step)s), event_time, %(start)s) AS bucket, rule,
               count(*) AS anomalies
        FROM anomalies
        WHERE engine = %(engine)s AND event_time >= %(start)s AND event_time < %(end)s
          AND (%(symbol)s::text IS NULL OR symbol = %(symbol)s)
          AND (%(rule)s::text IS NULL OR rule = %(rule)s)
        GROUP BY 1, 2 ORDER BY 1, 2""",
        {"start": start, "end": end, "step": step_seconds, "symbol": symbol, "rule": rule,
         "engine": DETECTOR_ENGINE})


def anomaly_extent(db: Database) -> tuple[datetime | None, datetime | None]:
    row = db.rows("SELECT min(event_time), max(event_time) FROM anomalies WHERE engine = %(engine)s",
                  {"engine": DETECTOR_ENGINE})[0]
    return row[0], row[1]


def recent_alerts(db: Database, limit: int = 8) -> pd.DataFrame | None:
    """The newest alerts the alert service delivered (006_alerts.sql), newest event first; None while the
    table does not exist. Uses the partial index alert_decisions_delivered_by_time."""
    if not db.table_exists("alert_decisions"):
        return None
    frame = db.frame("""
        SELECT symbol, rule, price, z_score, event_time, decided_at, trade_id FROM alert_decisions
        WHERE decision = 'delivered'
        ORDER BY event_time DESC, trade_id, rule LIMIT %(limit)s""", {"limit": limit})
    return _numeric(frame, ("price", "z_score"))


def detection_inputs(db: Database, start: datetime | None,
                     end: datetime | None) -> tuple[list, list, list | None] | None:
    """What marketpulse.analytics.scoring needs for trades whose event time (and windows whose start) is in
    [start, end) (unbounded where None): the anomalies table's (trade_id, rule, event ms, detected ms), the
    injected_labels rows of anomaly kinds as label dicts, and the multivariate detector's anomalous windows
    (symbol, start ms, end ms; None without the window_anomalies table). None while the labels table does
    not exist."""
    if not db.table_exists("injected_labels"):
        return None
    bounds = ("(%(start)s::timestamptz IS NULL OR {column} >= %(start)s) "
              "AND (%(end)s::timestamptz IS NULL OR {column} < %(end)s)")
    params = {"start": start, "end": end, "kinds": list(LABEL_KINDS), "engine": DETECTOR_ENGINE}
    detections = db.rows(
        "SELECT trade_id, rule, (extract(epoch FROM event_time) * 1000)::bigint, "
        "(extract(epoch FROM detected_at) * 1000)::bigint FROM anomalies WHERE engine = %(engine)s AND "
        + bounds.format(column="event_time"), params)
    episode = "episode" if db.table_exists("window_anomalies") else "NULL"  # the column came with 012
    rows = db.rows("SELECT trade_id, kind, (extract(epoch FROM event_time) * 1000)::bigint, symbol, "
                   f"{episode} FROM injected_labels WHERE kind = ANY(%(kinds)s) AND "
                   + bounds.format(column="event_time"), params)
    labels = [{"trade_id": trade_id, "kind": kind, "event_time": event_ms, "symbol": symbol,
               "episode": of_episode} for trade_id, kind, event_ms, symbol, of_episode in rows]
    windows = None
    if db.table_exists("window_anomalies"):
        windows = db.rows("SELECT symbol, (extract(epoch FROM window_start) * 1000)::bigint, "
                          "(extract(epoch FROM window_end) * 1000)::bigint FROM window_anomalies "
                          "WHERE anomalous AND " + bounds.format(column="window_start"), params)
    return detections, labels, windows


MARKET_STATUS_FRESH_S = 900  # a live source writes its row every poll, every 5 min while idling


def market_status(db: Database) -> pd.DataFrame:
    """The market state of each live source still running (a recent market_status row), if any."""
    if not db.table_exists("market_status"):
        return pd.DataFrame()
    return db.frame("""
        SELECT source, exchange, is_open, next_open, next_close, updated_at FROM market_status
        WHERE updated_at > now() - make_interval(secs => %(fresh)s) ORDER BY source""",
                    {"fresh": MARKET_STATUS_FRESH_S})


# --- pipeline health (database side) -------------------------------------------------------------

def pipeline_counts(db: Database, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    """Late trades and dead letters per engine: all time and inside [start, end)."""
    return db.frame("""
        SELECT 'late_trades' AS kind, engine, count(*) AS total,
               count(*) FILTER (WHERE event_time >= %(start)s AND event_time < %(end)s) AS in_range,
               max(event_time) AS latest
        FROM late_trades GROUP BY engine
        UNION ALL
        SELECT 'dead_letters', engine, count(*),
               count(*) FILTER (WHERE received_at >= %(start)s AND received_at < %(end)s),
               max(received_at)
        FROM dead_letters GROUP BY engine
        ORDER BY 1, 2""", {"start": start, "end": end})


def dead_letter_reasons(db: Database, limit: int = 5) -> pd.DataFrame:
    return db.frame("""
        SELECT reason, count(*) AS records, max(received_at) AS latest FROM dead_letters
        GROUP BY reason ORDER BY records DESC, reason LIMIT %(limit)s""", {"limit": limit})


def _numeric(frame: pd.DataFrame, columns) -> pd.DataFrame:
    for column in columns:
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame
