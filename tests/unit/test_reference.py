import dataclasses
import math
import random

import pytest

from marketpulse.analytics.detector import AnomalyDetector, DetectorConfig
from marketpulse.analytics.windows import aggregate_windows
from marketpulse.config import load_settings
from marketpulse.trade import Trade
from tests.reference import reference_anomalies, reference_windows

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
