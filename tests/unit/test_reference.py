import dataclasses
import math
import random

import pytest

from marketpulse.analytics.detector import AnomalyDetector, DetectorConfig
from marketpulse.analytics.windows import aggregate_windows
from marketpulse.config import load_settings
from marketpulse.trade import Trade
from tests.reference import (
    reference_anomalies,
    reference_indicator_alerts,
    reference_indicators,
    reference_sql_price_zscores,
    reference_windows,
    truncated_ema,
)

BASE = 1_700_000_100_000
SYMBOLS = ("AAPL", "MSFT", "NVDA", "JPM", "V")


def random_stream(seed, count):
    """Several symbols, out-of-order event times on a coarse grid (many ties), realistic price levels."""
    rng = random.Random(seed)
    prices = {symbol: rng.uniform(20.0, 900.0) for symbol in SYMBOLS}
    trades = []
    for index in range(count):
        symbol = rng.choice(SYMBOLS)
        prices[symbol] *= math.exp(rng.gauss(0.0, 0.002))
        trades.append(
            Trade(
                f"{symbol}-{rng.randrange(10**6):06d}-{index}",
                symbol,
                round(prices[symbol], 2),
                rng.randint(1, 2_000),
                rng.choice(("BUY", "SELL")),
                BASE + 7_000 + index * 60 + rng.randrange(-3_000, 3_000, 500),
            )
        )
    return trades


def gbm_with_spikes(seed, count, volatility):
    """One symbol: GBM returns, ~1% one-trade price spikes of 5-50% and ~0.5% size spikes."""
    rng = random.Random(seed)
    price, trades = 100.0, []
    for index in range(count):
        price *= math.exp(rng.gauss(0.0, volatility))
        traded = price * (1 + rng.choice((-1, 1)) * rng.uniform(0.05, 0.5)) if rng.random() < 0.01 else price
        size = max(1, round(rng.lognormvariate(math.log(100), 0.6)))
        if rng.random() < 0.005:
            size *= 50
        trades.append(Trade(f"t{index}", "AAPL", traded, size, "BUY", BASE + index * 40))
    return trades


@pytest.mark.parametrize("size_seconds", [10, 60])
def test_windows_equal_the_reference(size_seconds):
    trades = random_stream(seed=17, count=5_000)

    expected = reference_windows(trades, size_seconds)
    actual = [dataclasses.asdict(row) for row in aggregate_windows(trades, size_seconds)]

    assert len(actual) == len(expected) > 5 * 300 // size_seconds
    for want, got in zip(expected, actual, strict=True):
        assert got.keys() == want.keys()
        for column, value in want.items():
            if isinstance(value, float):
                assert got[column] == pytest.approx(value, rel=1e-9, abs=1e-12), (want["symbol"], column)
            else:
                assert got[column] == value, (want["symbol"], want["window_start"], column)


@pytest.mark.parametrize(
    ("lookback", "warmup", "volatility"), [(100, 30, 0.002), (20, 10, 0.001), (50, 50, 0.003)]
)
def test_detector_equals_the_reference(lookback, warmup, volatility):
    settings = load_settings(environ={})
    config = dataclasses.replace(DetectorConfig.from_settings(settings), lookback=lookback, warmup=warmup)
    trades = gbm_with_spikes(seed=lookback, count=8_000, volatility=volatility)

    detector = AnomalyDetector(config)
    actual = [(a.trade_id, a.rule, a.z_score) for item in trades for a in detector.push(item)]
    expected = reference_anomalies(trades, **dataclasses.asdict(config))

    assert [anomaly[:2] for anomaly in actual] == [anomaly[:2] for anomaly in expected]
    assert {rule for _, rule, _ in expected} == {"price_zscore", "price_jump", "volume_zscore"}
    for (_, _, got), (_, _, want) in zip(actual, expected, strict=True):
        assert got == pytest.approx(want, rel=1e-9)



def test_the_sql_rule_reports_a_spike_and_a_jump_once_like_the_detector():
    """The SQL job's price z-score rule (sql/anomalies.sql, its reference here) and the detector, on 60 quiet
    trades one tick apart, then a one-trade +10 % spike at the same millisecond as the trade back (a tie,
    in arrival order), then a lasting -5 % jump: both flag the spike and the jump's first trade, nothing
    else; and a trade that looks ordinary only against the trade two back is still flagged by the SQL rule
    after two anomalous trades in a row (its documented difference), where the detector is quiet."""
    config = DetectorConfig.from_settings(load_settings(environ={}))
    rule = {key: getattr(config, key) for key in ("lookback", "warmup", "z_threshold", "price_jump_pct",
                                                  "tick_size", "min_stddev_ticks")}
    prices = [100.0 + 0.01 * (index % 2) for index in range(60)] + [110.0, 100.0, 100.01, 95.0, 95.01, 95.0]
    times = [BASE + 100 * index for index in range(len(prices))]
    times[61] = times[60]  # the way back at the spike's millisecond
    trades = [Trade(f"T{index}", "AAPL", price, 100, "BUY", at)
              for index, (price, at) in enumerate(zip(prices, times, strict=True))]
    detector = AnomalyDetector(config)
    flagged = {a.trade_id for trade in trades for a in detector.push(trade) if a.rule == "price_zscore"}
    assert set(reference_sql_price_zscores(trades, **rule)) == flagged == {"T60", "T63"}

    # Two anomalous trades in a row (a spike, then a crash), then back to the old level.
    twice = trades[:60] + [Trade("U60", "AAPL", 110.0, 100, "BUY", BASE + 6_000),
                           Trade("U61", "AAPL", 90.0, 100, "BUY", BASE + 6_100),
                           Trade("U62", "AAPL", 100.01, 100, "BUY", BASE + 6_200)]
    detector = AnomalyDetector(config)
    flagged = {a.trade_id for trade in twice for a in detector.push(trade) if a.rule == "price_zscore"}
    assert flagged == {"U60", "U61"}
    assert set(reference_sql_price_zscores(twice, **rule)) == {"U60", "U61", "U62"}

# --- indicators (tests/reference.py against the recursive EMA it must equal) ------------------------------

def recursive_ema(values, span):
    """e_t = a x_t + (1 - a) e_{t-1} started at e_0 = x_0 (pandas ewm(adjust=False))."""
    a, out = 2 / (span + 1), []
    for value in values:
        out.append(value if not out else a * value + (1 - a) * out[-1])
    return out


def test_the_truncated_ema_weights_what_it_has_and_drops_only_q_to_the_terms():
    rng = random.Random(5)
    values = [100 + rng.gauss(0, 1) for _ in range(300)]
    span, terms = 26, 128
    q = 1 - 2 / (span + 1)
    got = truncated_ema(values, span, terms)
    # The first bars: every weight present, normalised (adjust=True), by hand.
    assert got[1] == pytest.approx((values[1] + q * values[0]) / (1 + q), rel=1e-15)
    # Far from the start the recursive EMA carries q^terms of its weight on older values, and q^t on its
    # start value; the truncated one differs from it by at most that share of the values' spread.
    recursive = recursive_ema(values, span)
    spread = max(values) - min(values)
    for t in range(200, 300):
        assert abs(got[t] - recursive[t]) <= (q ** terms + q ** t) * spread * 1.01
    # And the truncation matters at this span: it is not the full adjust=True EMA.
    assert abs(got[-1] - recursive[-1]) > 1e-9


def test_reference_indicators_warm_up_and_macd_is_fast_minus_slow():
    periods = load_settings(environ={}).indicators
    closes = [100 * math.exp(0.01 * math.sin(i / 5)) for i in range(80)]
    bars = [{"symbol": "X", "window_start": 10_000 * i, "window_end": 10_000 * (i + 1), "close": c}
            for i, c in enumerate(closes)]
    rows = reference_indicators(bars, periods)
    assert [r["sma"] is not None for r in rows] == [i >= periods.sma_bars - 1 for i in range(80)]
    assert [r["sma_long"] is not None for r in rows] == [i >= periods.sma_long_bars - 1 for i in range(80)]
    assert rows[-1]["sma_long"] == pytest.approx(sum(closes[-periods.sma_long_bars:]) / periods.sma_long_bars)
    for row in rows:
        assert row["macd"] == row["ema_fast"] - row["ema_slow"]
        assert row["macd_histogram"] == row["macd"] - row["macd_signal"]
    assert rows[0]["macd"] == 0.0 and rows[0]["ewma"] == closes[0]


def test_indicator_alerts_fire_on_the_bar_that_crosses():
    rows = [{"symbol": "X", "bar_end": 10_000 * (i + 1), "close": c, "rsi": r, "sma": 100.0, "sigma": 1.0,
             "bollinger_upper": 102.0, "bollinger_lower": 98.0}
            for i, (c, r) in enumerate([(100, None), (103, 71), (104, 75), (101, 69), (97, 70.5), (96, 29)])]
    fired, borderline = reference_indicator_alerts(rows, 70.0, 30.0)
    assert sorted(fired) == [("X@20000", "bollinger_upper_break"), ("X@20000", "rsi_overbought"),
                             ("X@50000", "bollinger_lower_break"), ("X@50000", "rsi_overbought"),
                             ("X@60000", "rsi_oversold")]
    assert fired[("X@20000", "bollinger_upper_break")] == (20_000, 103, 3.0, 100.0)
    assert fired[("X@60000", "rsi_oversold")] == (60_000, 96, 29, 30.0)
    assert borderline == set()
    rows[3]["rsi"] = 70.0  # exactly on the level: the next bar's crossing rests on an equality
    assert ("X@50000", "rsi_overbought") in reference_indicator_alerts(rows, 70.0, 30.0)[1]
