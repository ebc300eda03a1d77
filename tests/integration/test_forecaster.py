"""`python -m forecaster` on the real PostgreSQL: bars in a scratch database's window_metrics, the forecasts
and error rows it writes, checked against series whose forecasts are known and errors computed here from the
closes we wrote; a rerun changes nothing; a live round fits only what has a new bar; too few bars and a
database that is down are one line each, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tests import support

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)
BARS = 30
LINE = [100 + 0.1 * i for i in range(BARS)]
WALK = [float(c) for c in 100 + np.cumsum(np.random.default_rng(7).normal(0, 0.05, BARS))]
SPIKE = 25  # WALK's bar 25 closes on a one-trade spike the detector flagged: neither fitted nor scored
WALK[SPIKE] = 150.0
# A smaller ARIMA grid than the default: what is tested here is the process around the models.
SMALL_GRID = {"forecast_max_p": "1", "forecast_max_q": "1"}


def insert_bars(scratch, symbol: str, closes, first: int = 0) -> None:
    start = [T0 + timedelta(minutes=first + i) for i in range(len(closes) + 1)]
    rows = [("datastream", symbol, 60, start[i], start[i + 1], c, c, c, c, c, 10, c * 10, 1, 1, 0, c, c, c,
             0.0) for i, c in enumerate(closes)]
    with closing(support.pg_connect(scratch)) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO window_metrics (engine, symbol, window_seconds, window_start, "
                        "window_end, open, high, low, close, vwap, volume, notional, trade_count, buy_count, "
                        "sell_count, min_price, max_price, avg_price, stddev_price) VALUES "
                        "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
        conn.commit()


def forecaster(scratch, *args: str, **overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forecaster", *args], cwd=support.REPO,
                          env=support.env_for(scratch, **(SMALL_GRID | overrides)), capture_output=True,
                          text=True, timeout=300)


def minute(value: datetime) -> int:
    return round((value - T0).total_seconds() / 60)


def test_backtest_writes_known_forecasts_and_errors_equal_to_a_computation_from_the_closes(stack, scratch_db):
    insert_bars(scratch_db, "LINE", LINE)
    insert_bars(scratch_db, "WALK", WALK)
    insert_bars(scratch_db, "FEW", LINE[:5])
    with closing(support.pg_connect(scratch_db)) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO anomalies (trade_id, rule, symbol, event_time, price, size, detected_at) "
                    "VALUES ('w25', 'price_jump', 'WALK', %s, 150.0, 1, now())",
                    (T0 + timedelta(minutes=SPIKE, seconds=59),))
        conn.commit()
    result = forecaster(scratch_db, "--backtest")  # an origin every 5 bars (refit_minutes) from the newest
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    assert "FEW (5 bars, 20 needed)" in result.stderr and "Traceback" not in result.stderr

    rows = support.query(scratch_db, """
        SELECT symbol, model, origin_start, target_start, horizon, point, lower, upper, level, actual, spec
        FROM forecasts ORDER BY symbol, model, origin_start, target_start""")
    # Origins: bar 29 (the newest) and every 5 bars before it while 20 bars of history are there.
    assert {minute(r[2]) for r in rows} == {19, 24, 29}
    assert {r[0] for r in rows} == {"LINE", "WALK"}
    assert len(rows) == 2 * 2 * 3 * 10  # symbols x models x origins x horizons
    for symbol, model, origin, target, horizon, point, lower, upper, level, actual, _ in rows:
        t = minute(target)
        assert t == minute(origin) + horizon and level == 0.95
        closes = LINE if symbol == "LINE" else WALK
        assert actual == (pytest.approx(closes[t]) if t < BARS else None)
        assert lower <= point <= upper
        if symbol == "LINE" and model == "linear":  # an exact line: forecast exactly, no interval width
            assert point == pytest.approx(100 + 0.1 * t) and upper - lower == pytest.approx(0, abs=1e-9)

    errors = {(r[0], r[1]): r[2:] for r in support.query(
        scratch_db, "SELECT symbol, model, forecasts, flagged, mae, mape, coverage FROM forecast_errors")}
    assert set(errors) == {("LINE", "arima"), ("LINE", "linear"), ("WALK", "arima"), ("WALK", "linear")}
    for (symbol, model), (n, flagged, mae, mape, coverage) in errors.items():
        closes = LINE if symbol == "LINE" else WALK
        spike = SPIKE if symbol == "WALK" else None
        scored = [(point, lower, upper, closes[minute(target)])
                  for s, m, _, target, _, point, lower, upper, *_ in rows
                  if (s, m) == (symbol, model) and minute(target) < BARS and minute(target) != spike]
        e = np.array([abs(actual - point) for point, _, _, actual in scored])
        # Origins 19 and 24 have 10 and 5 targets in the 30 bars, 29 none; WALK's spike is a target of both.
        assert (n, flagged) == ((13, 2) if spike else (15, 0)) and n == len(scored)
        assert mae == pytest.approx(e.mean())
        assert mape == pytest.approx(np.mean([abs(a - p) / a for p, _, _, a in scored]) * 100)
        assert coverage == pytest.approx(np.mean([lo <= a <= up for _, lo, up, a in scored]))
    assert errors[("LINE", "linear")][2] == pytest.approx(0, abs=1e-9)
    table = {tuple(line.split()[:2]): line.split() for line in result.stdout.splitlines()[1:]}
    walk = errors[("WALK", "linear")]
    assert table[("WALK", "linear")][-5:-2] == ["13", f"{walk[2]:.4f}", f"{walk[3]:.4f}"]

    # The same bars again: the same rows (the upsert key is the origin and target), nothing added.
    again = forecaster(scratch_db, "--backtest")
    assert again.returncode == 0, again.stderr
    assert support.query(scratch_db, """
        SELECT symbol, model, origin_start, target_start, horizon, point, lower, upper, level, actual, spec
        FROM forecasts ORDER BY symbol, model, origin_start, target_start""") == rows

    # A live round: only LINE has a bar newer than its last origin (29); it is fitted from bar 30 alone.
    insert_bars(scratch_db, "LINE", [104.0], first=BARS)
    live = forecaster(scratch_db, "--once")
    assert live.returncode == 0, live.stderr
    assert "1 fit (1 symbols" in live.stderr
    assert support.query(scratch_db, "SELECT DISTINCT symbol FROM forecasts WHERE origin_start = %s",
                         (T0 + timedelta(minutes=BARS),)) == [("LINE",)]


def test_a_database_that_is_down_is_one_line(stack, scratch_db):
    result = forecaster(scratch_db, "--once", postgres_port="1")
    assert result.returncode == 1
    assert "error: PostgreSQL at 127.0.0.1:1/" in result.stderr and "unreachable" in result.stderr
    assert "Traceback" not in result.stderr
