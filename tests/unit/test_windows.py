import math
import pickle
import random
import re
from dataclasses import astuple

import pytest

from marketpulse.analytics.windows import (
    WINDOW_METRICS_COLUMNS,
    WindowAccumulator,
    WindowMetrics,
    aggregate_windows,
    window_start_ms,
)
from marketpulse.config import REPO_ROOT
from marketpulse.trade import Trade

# 2023-11-14T22:15:00Z: a multiple of 60 s, so [BASE, BASE + 60 s) is one window.
BASE = 1_700_000_100_000


def trade(trade_id, price, size, side, event_time, symbol="AAPL"):
    return Trade(trade_id, symbol, price, size, side, event_time)


# Added out of time order on purpose: open is "b" (earliest), close is "c" (latest).
HAND_WINDOW = [
    trade("a", 10.0, 100, "BUY", BASE + 5_000),
    trade("b", 12.0, 200, "SELL", BASE + 1_000),
    trade("c", 11.0, 100, "BUY", BASE + 59_999),
    trade("d", 13.0, 100, "BUY", BASE + 30_000),
]


def table_columns(table):
    schema = (REPO_ROOT / "db" / "schema" / "001_core.sql").read_text()
    body = re.search(rf"CREATE TABLE {table} \((.*?)\n\);", schema, re.S).group(1)
    return [
        line.split()[0]
        for line in body.strip().splitlines()
        if line.strip() and not line.strip().startswith(("PRIMARY KEY", "--"))
    ]


def random_trades(seed, count, symbols=("AAPL",), start=BASE, span_ms=180_000):
    rng = random.Random(seed)
    return [
        trade(
            f"t{index:06d}",
            round(rng.uniform(99.0, 101.0), 2),
            rng.randint(1, 500),
            rng.choice(("BUY", "SELL")),
            # A coarse time grid so that equal event times (ties) are common.
            start + rng.randrange(0, span_ms, 250),
            symbol=rng.choice(symbols),
        )
        for index in range(count)
    ]


def test_window_start_is_epoch_aligned():
    assert window_start_ms(BASE + 23_456, 60_000) == BASE
    assert window_start_ms(1_700_000_123_456, 10_000) == 1_700_000_120_000
    assert window_start_ms(0, 60_000) == 0
    # Same as Flink's TimeWindow.getWindowStartWithOffset for timestamps before the epoch.
    assert window_start_ms(-1, 60_000) == -60_000


def test_trade_on_a_boundary_belongs_to_the_next_window():
    assert window_start_ms(BASE + 59_999, 60_000) == BASE
    assert window_start_ms(BASE + 60_000, 60_000) == BASE + 60_000


def test_window_size_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        window_start_ms(BASE, 0)


def test_window_metrics_fields_are_the_window_metrics_columns():
    assert WINDOW_METRICS_COLUMNS == tuple(
        column for column in table_columns("window_metrics") if column != "engine"
    )


def test_hand_computed_window():
    accumulator = WindowAccumulator()
    for item in HAND_WINDOW:
        accumulator.add(item)

    assert accumulator.to_metrics("AAPL", BASE, BASE + 60_000) == WindowMetrics(
        symbol="AAPL",
        window_seconds=60,
        window_start=BASE,
        window_end=BASE + 60_000,
        open=12.0,
        high=13.0,
        low=10.0,
        close=11.0,
        vwap=11.6,  # (1000 + 2400 + 1100 + 1300) / 500
        volume=500,
        notional=5800.0,
        trade_count=4,
        buy_count=3,
        sell_count=1,
        min_price=10.0,
        max_price=13.0,
        avg_price=11.5,
        stddev_price=math.sqrt(1.25),  # population: (1.5² + 0.5² + 0.5² + 1.5²) / 4 = 1.25
    )
    assert math.sqrt(1.25) == pytest.approx(1.118033988749895, rel=1e-15)


def test_single_trade_window_has_zero_stddev():
    accumulator = WindowAccumulator().add(trade("x", 101.37, 7, "SELL", BASE + 60_000))

    metrics = accumulator.to_metrics("AAPL", BASE + 60_000, BASE + 120_000)

    assert (metrics.open, metrics.high, metrics.low, metrics.close) == (101.37, 101.37, 101.37, 101.37)
    assert (metrics.vwap, metrics.avg_price, metrics.notional) == (101.37, 101.37, 101.37 * 7)
    assert metrics.stddev_price == 0.0
    assert (metrics.trade_count, metrics.buy_count, metrics.sell_count, metrics.volume) == (1, 0, 1, 7)


def test_stddev_is_exact_for_large_prices_with_a_small_spread():
    # sum(x²) - sum(x)²/n would lose every digit here; Welford keeps them.
    accumulator = WindowAccumulator()
    for index, price in enumerate((1e9 + 1, 1e9 + 2, 1e9 + 3, 1e9 + 4)):
        accumulator.add(trade(f"t{index}", price, 1, "BUY", BASE + index))

    assert accumulator.to_metrics("AAPL", BASE, BASE + 60_000).stddev_price == math.sqrt(1.25)


def test_aggregate_windows_splits_on_the_boundary_and_sorts():
    trades = [
        *HAND_WINDOW,
        trade("e", 14.0, 50, "SELL", BASE + 60_000),  # exactly on the boundary: next window
        trade("f", 20.0, 10, "BUY", BASE + 1_000, symbol="MSFT"),
    ]

    windows = aggregate_windows(reversed(trades), 60)

    assert [(row.symbol, row.window_start, row.trade_count) for row in windows] == [
        ("AAPL", BASE, 4),
        ("AAPL", BASE + 60_000, 1),
        ("MSFT", BASE, 1),
    ]
    assert (windows[0].open, windows[0].close, windows[0].vwap) == (12.0, 11.0, 11.6)
    assert (windows[1].open, windows[1].close, windows[1].window_end) == (14.0, 14.0, BASE + 120_000)


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]])
def test_open_and_close_ties_are_broken_by_trade_id_whatever_the_arrival_order(order):
    tied = [
        trade("T-2", 50.0, 1, "BUY", BASE + 100),
        trade("T-1", 51.0, 1, "BUY", BASE + 100),  # same first time, smaller id: the open
        trade("T-8", 52.0, 1, "SELL", BASE + 900),  # same last time, larger id: the close
        trade("T-9", 53.0, 1, "SELL", BASE + 900),
    ]
    accumulator = WindowAccumulator()
    for index in order:
        accumulator.add(tied[index])

    metrics = accumulator.to_metrics("AAPL", BASE, BASE + 10_000)

    assert (metrics.open, metrics.close) == (51.0, 53.0)


def test_merge_equals_sequential_add():
    trades = random_trades(seed=3, count=1_000)
    sequential = WindowAccumulator()
    for item in trades:
        sequential.add(item)
    merged = WindowAccumulator()
    for chunk_start in range(0, len(trades), 137):
        part = WindowAccumulator()
        for item in trades[chunk_start : chunk_start + 137]:
            part.add(item)
        merged.merge(part)

    expected = astuple(sequential.to_metrics("AAPL", BASE, BASE + 180_000))
    actual = astuple(merged.to_metrics("AAPL", BASE, BASE + 180_000))
    for column, want, got in zip(WINDOW_METRICS_COLUMNS, expected, actual, strict=True):
        if isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-12), column
        else:
            assert got == want, column


def test_merge_with_an_empty_accumulator_changes_nothing():
    full = WindowAccumulator()
    for item in HAND_WINDOW:
        full.add(item)
    snapshot = full.to_tuple()

    assert full.merge(WindowAccumulator()).to_tuple() == snapshot
    assert WindowAccumulator().merge(full).to_tuple() == snapshot
    assert full.to_tuple() == snapshot


def test_merge_takes_open_and_close_from_either_side():
    early, late = WindowAccumulator(), WindowAccumulator()
    early.add(HAND_WINDOW[1]).add(HAND_WINDOW[0])  # b (open) and a
    late.add(HAND_WINDOW[2]).add(HAND_WINDOW[3])  # c (close) and d

    metrics = late.merge(early).to_metrics("AAPL", BASE, BASE + 60_000)

    assert (metrics.open, metrics.close, metrics.high, metrics.low) == (12.0, 11.0, 13.0, 10.0)
    assert metrics.stddev_price == pytest.approx(math.sqrt(1.25), rel=1e-15)


def test_tuple_round_trip_is_exact_and_picklable():
    accumulator = WindowAccumulator()
    for item in random_trades(seed=5, count=50):
        accumulator.add(item)

    state = pickle.loads(pickle.dumps(accumulator.to_tuple()))
    restored = WindowAccumulator.from_tuple(state)

    assert restored == accumulator
    assert all(isinstance(value, int | float | str) for value in state)
    restored.add(HAND_WINDOW[0])
    accumulator.add(HAND_WINDOW[0])
    assert restored.to_tuple() == accumulator.to_tuple()


def test_empty_accumulator_round_trips_and_has_no_metrics():
    empty = WindowAccumulator.from_tuple(WindowAccumulator().to_tuple())

    assert empty.is_empty and empty == WindowAccumulator()
    with pytest.raises(ValueError, match="no trades"):
        empty.to_metrics("AAPL", BASE, BASE + 60_000)


def test_window_must_be_whole_seconds():
    accumulator = WindowAccumulator().add(HAND_WINDOW[0])
    with pytest.raises(ValueError, match="whole number of seconds"):
        accumulator.to_metrics("AAPL", BASE, BASE + 1_500)


def test_unknown_side_is_refused():
    with pytest.raises(ValueError, match="unknown side"):
        WindowAccumulator().add(trade("z", 1.0, 1, "HOLD", BASE))
