"""Deterministic dashboard data for the browser tests: a short historical session (event times in 2025)
written straight into a scratch database, shaped like the Flink jobs' output.

    AAPL, MSFT, TSLA: 30 one-minute windows and 180 ten-second windows from the DataStream engine,
    AAPL also 30 one-minute windows from the SQL engine, and the SQL job's indicators of its ten-second bars
    (tests/reference.py's formulas with the configured periods) and its sliding averages; anomalies on AAPL
    and TSLA; a few late trades and dead letters; ground-truth labels (LABELS) for three of the anomalies
    plus one nobody detected; the forecaster's forecast of AAPL's next FORECAST_BARS one-minute closes from
    its last bar, and its errors (FORECAST_ERRORS)."""

from __future__ import annotations

import math
from contextlib import closing
from datetime import UTC, datetime, timedelta

from psycopg2.extras import execute_values

from marketpulse.config import load_settings
from tests import support
from tests.reference import reference_indicators

START = datetime(2025, 3, 14, 14, 30, tzinfo=UTC)
MINUTES = 30
SYMBOLS = {"AAPL": ("Apple Inc.", 212.0), "MSFT": ("Microsoft Corp.", 415.0), "TSLA": ("Tesla Inc.", 248.0)}
# (symbol, rule, minute offset, seconds into the minute)
ANOMALIES = [("AAPL", "price_zscore", 5, 12), ("AAPL", "price_jump", 12, 40),
             ("AAPL", "volume_zscore", 20, 3), ("AAPL", "price_zscore", 27, 55),
             ("TSLA", "price_jump", 8, 30), ("TSLA", "price_zscore", 25, 1)]
# Ground truth (injected_labels): (trade id, kind, symbol, minute, second). t1, t4 and t2 are the
# detections above; "missed" is an injected spike no rule caught.
LABELS = [("t1", "price_spike", "AAPL", 12, 40), ("t4", "price_crash", "TSLA", 8, 30),
          ("t2", "volume_spike", "AAPL", 20, 3), ("missed", "price_spike", "MSFT", 15, 0)]
DETECTION_DELAY = timedelta(milliseconds=1500)
FORECAST_BARS = 10
# (model, forecasts, mae, mape, coverage) of AAPL's forecast_errors rows
FORECAST_ERRORS = [("arima", 120, 0.31, 0.146, 0.93), ("linear", 120, 0.42, 0.198, 0.88)]


def _price(base: float, i: int, seconds: int, phase: float) -> float:
    t = i * seconds / 60.0
    return round(base * (1 + 0.004 * math.sin(t / 3.0 + phase) + 0.0007 * t), 4)


def window_rows(engine: str, symbol: str, seconds: int, count: int, phase: float) -> list[tuple]:
    base = SYMBOLS[symbol][1]
    rows = []
    for i in range(count):
        start = START + timedelta(seconds=i * seconds)
        open_, close = _price(base, i, seconds, phase), _price(base, i + 1, seconds, phase)
        high, low = max(open_, close) * 1.0012, min(open_, close) * 0.9988
        volume = 1000 + (i * 37 + len(symbol) * 101) % 900
        vwap = round((open_ + close + high + low) / 4, 4)
        trades = 20 + i % 7
        rows.append((engine, symbol, seconds, start, start + timedelta(seconds=seconds), open_, high, low,
                     close, vwap, volume, vwap * volume, trades, trades // 2, trades - trades // 2,
                     low, high, vwap, 0.05))
    return rows


INDICATOR_COLUMNS = ("close", "sma", "ewma", "bollinger_upper", "bollinger_lower", "volatility", "rsi",
                     "ema_fast", "ema_slow", "macd", "macd_signal", "macd_histogram", "sma_long")


def indicator_rows(symbol: str, phase: float) -> list[tuple]:
    """The indicators table of the symbol's ten-second datastream bars, as the SQL job would write them."""
    bars = [{"symbol": symbol, "window_start": row[3], "window_end": row[4], "close": row[8]}
            for row in window_rows("datastream", symbol, 10, MINUTES * 6, phase)]
    return [(symbol, 10, row["bar_start"], row["bar_end"], *(row[c] for c in INDICATOR_COLUMNS))
            for row in reference_indicators(bars, load_settings(environ={}).indicators)]


def moving_average_rows(symbol: str, phase: float) -> list[tuple]:
    """60 s sliding windows every 10 s over the ten-second bars (their VWAPs standing in for the trades)."""
    bars = window_rows("datastream", symbol, 10, MINUTES * 6, phase)
    return [(symbol, 60, 10, bars[i][4] - timedelta(seconds=60), bars[i][4],
             sum(b[9] for b in bars[i - 5: i + 1]) / 6, sum(b[9] for b in bars[i - 5: i + 1]) / 6,
             sum(b[10] for b in bars[i - 5: i + 1]), sum(b[12] for b in bars[i - 5: i + 1]))
            for i in range(5, len(bars))]


def forecast_rows(symbol: str, phase: float) -> list[tuple]:
    """From the last one-minute bar: ARIMA flat at its close with a band widening as sqrt(h), the linear
    trend rising 0.05 a bar."""
    origin = START + timedelta(minutes=MINUTES - 1)
    close = _price(SYMBOLS[symbol][1], MINUTES, 60, phase)  # window_rows: bar i closes at _price(i + 1)
    rows = []
    for h in range(1, FORECAST_BARS + 1):
        target = origin + timedelta(minutes=h)
        half = 0.3 * math.sqrt(h)
        rows.append((symbol, 60, "arima", origin, target, h, "datastream", "ARIMA(0,1,0)", 30, close, close,
                     close - half, close + half, 0.95))
        rows.append((symbol, 60, "linear", origin, target, h, "datastream", "linear trend", 30, close,
                     close + 0.05 * h, close + 0.05 * h - 0.4, close + 0.05 * h + 0.4, 0.95))
    return rows


def seed(settings) -> dict:
    """Writes the demo rows; returns what it wrote (counts the tests compare against)."""
    windows = []
    for n, symbol in enumerate(SYMBOLS):
        windows += window_rows("datastream", symbol, 60, MINUTES, n)
        windows += window_rows("datastream", symbol, 10, MINUTES * 6, n)
    windows += window_rows("sql", "AAPL", 60, MINUTES, 0)
    anomalies = []
    for k, (symbol, rule, minute, second) in enumerate(ANOMALIES):
        at = START + timedelta(minutes=minute, seconds=second)
        price = _price(SYMBOLS[symbol][1], minute, 60, list(SYMBOLS).index(symbol)) * 1.01
        anomalies.append((f"t{k}", rule, symbol, at, price, 500 + k, 6.5 + k, price * 0.99, 0.4,
                          at + DETECTION_DELAY))
    with closing(support.pg_connect(settings)) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO symbols (symbol, company, sector, exchange, start_price) "
                        "VALUES (%s, %s, 'Technology', 'NASDAQ', %s)",
                        [(s, name, price) for s, (name, price) in SYMBOLS.items()])
        execute_values(cur, "INSERT INTO window_metrics VALUES %s", windows)
        execute_values(cur, "INSERT INTO anomalies VALUES %s", anomalies)
        execute_values(cur, "INSERT INTO indicators (symbol, bar_seconds, bar_start, bar_end, "
                            f"{', '.join(INDICATOR_COLUMNS)}) VALUES %s", indicator_rows("AAPL", 0))
        execute_values(cur, "INSERT INTO moving_averages (symbol, window_seconds, slide_seconds, "
                            "window_start, window_end, avg_price, vwap, volume, trade_count) VALUES %s",
                       moving_average_rows("AAPL", 0))
        execute_values(cur, "INSERT INTO injected_labels (trade_id, kind, symbol, event_time) VALUES %s",
                       [(trade_id, kind, symbol, START + timedelta(minutes=minute, seconds=second))
                        for trade_id, kind, symbol, minute, second in LABELS])
        execute_values(cur, "INSERT INTO forecasts (symbol, bar_seconds, model, origin_start, target_start, "
                            "horizon, engine, spec, bars_used, origin_close, point, lower, upper, level) "
                            "VALUES %s", forecast_rows("AAPL", 0))
        execute_values(cur, "INSERT INTO forecast_errors (symbol, bar_seconds, model, forecasts, flagged, "
                            "mae, mape, coverage, level) VALUES %s",
                       [("AAPL", 60, model, n, 0, mae, mape, coverage, 0.95)
                        for model, n, mae, mape, coverage in FORECAST_ERRORS])
        execute_values(cur, "INSERT INTO late_trades VALUES %s",
                       [("datastream", f"late{i}", "AAPL", 212.0, 10, "buy",
                         START + timedelta(minutes=i), START + timedelta(minutes=i, seconds=5))
                        for i in range(3)])
        execute_values(cur, "INSERT INTO dead_letters VALUES %s",
                       [("datastream", f"sha{i}", "{bad", "invalid JSON", "trades",
                         START + timedelta(minutes=i)) for i in range(2)])
    return {"symbols": list(SYMBOLS), "windows": len(windows), "anomalies": anomalies,
            "candles_60": MINUTES, "candles_10": MINUTES * 6}
