"""Tumbling event-time window aggregates per symbol, free of Flink so jobs and tests share one definition.

A window of `size` ms holds the trades with `start <= event_time < start + size`, where
`start = event_time - (event_time mod size)`: aligned to the epoch like Flink's `TumblingEventTimeWindows`
and the SQL `TUMBLE` TVF, so a trade exactly on a boundary opens the next window.

Every field of `WindowMetrics` is one column of the `window_metrics` table (all but `engine`, set by the job).
Over the trades of one (symbol, window):

    open          price of the trade with the smallest (event_time, trade_id)
    close         price of the trade with the largest (event_time, trade_id)
    high, low     max and min price (equal to max_price and min_price; the table keeps both names)
    volume        sum(size)
    notional      sum(price * size)
    vwap          notional / volume
    trade_count   count(*); buy_count and sell_count split it by side
    avg_price     mean of the prices, unweighted (SQL AVG(price))
    stddev_price  POPULATION standard deviation of the prices (SQL STDDEV_POP(price)); 0.0 for a single trade

Ties on event_time are broken by trade_id (string order, which is also the byte order of its UTF-8 form,
as in Flink SQL's `ORDER BY event_time, trade_id`), so open and close never depend on arrival order,
which differs between Kafka partitions, replays and the two engines. The SQL job must therefore take
open/close with a window Top-N ordered by (event_time, trade_id), not FIRST_VALUE/LAST_VALUE, which
follow arrival order.

The standard deviation is kept as (n, mean, M2), updated with Welford's method and merged with Chan et al.'s
formula, so it stays accurate when prices are large and the spread is small. Flink SQL rewrites STDDEV_POP as
sqrt((sum(x^2) - sum(x)^2 / n) / n), which loses about eps * mean^2 / variance of relative precision (around
1e-10 for a 100-dollar stock moving by cents): compare the two engines with a tolerance, not for equality.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields

from marketpulse.trade import Trade

MILLIS_PER_SECOND = 1000


def window_start_ms(event_time_ms: int, size_ms: int) -> int:
    """Start of the tumbling window of `size_ms` that holds `event_time_ms` (epoch-aligned, offset 0)."""
    if size_ms <= 0:
        raise ValueError(f"window size must be positive, got {size_ms} ms")
    return event_time_ms - (event_time_ms % size_ms)


@dataclass(frozen=True, slots=True)
class WindowMetrics:
    """One row of `window_metrics` (without `engine`); window_start and window_end are epoch ms."""

    symbol: str
    window_seconds: int
    window_start: int
    window_end: int
    open: float
    high: float
    low: float
    close: float
    vwap: float
    volume: int
    notional: float
    trade_count: int
    buy_count: int
    sell_count: int
    min_price: float
    max_price: float
    avg_price: float
    stddev_price: float


WINDOW_METRICS_COLUMNS: tuple[str, ...] = tuple(field.name for field in fields(WindowMetrics))


class WindowAccumulator:
    """The running aggregate of one (symbol, window); Flink state or an AggregateFunction holds `to_tuple()`.

    Holds O(1) values whatever the number of trades, and `merge` is exact for the counts, sums, extremes and
    open/close, so session merges, pre-aggregation and parallel partial aggregates all give the same result.
    """

    __slots__ = (
        "trade_count",
        "buy_count",
        "sell_count",
        "volume",
        "notional",
        "mean_price",
        "m2_price",
        "min_price",
        "max_price",
        "open_key",
        "open_price",
        "close_key",
        "close_price",
    )

    def __init__(self) -> None:
        self.trade_count = 0
        self.buy_count = 0
        self.sell_count = 0
        self.volume = 0
        self.notional = 0.0
        # Welford: mean and sum of squared deviations of the prices.
        self.mean_price = 0.0
        self.m2_price = 0.0
        self.min_price = math.inf
        self.max_price = -math.inf
        # (event_time, trade_id) of the current open and close trade; None while empty.
        self.open_key: tuple[int, str] | None = None
        self.open_price = 0.0
        self.close_key: tuple[int, str] | None = None
        self.close_price = 0.0

    def __repr__(self) -> str:
        return f"WindowAccumulator{self.to_tuple()!r}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WindowAccumulator):
            return NotImplemented
        return self.to_tuple() == other.to_tuple()

    __hash__ = None  # mutable

    @property
    def is_empty(self) -> bool:
        return self.trade_count == 0

    def add(self, trade: Trade) -> WindowAccumulator:
        """Adds one trade; returns self so an AggregateFunction's `add` can `return acc.add(trade)`."""
        if trade.side == "BUY":
            self.buy_count += 1
        elif trade.side == "SELL":
            self.sell_count += 1
        else:
            raise ValueError(f"trade {trade.trade_id}: unknown side {trade.side!r}")
        price = trade.price
        self.trade_count += 1
        self.volume += trade.size
        self.notional += price * trade.size

        delta = price - self.mean_price
        self.mean_price += delta / self.trade_count
        self.m2_price += delta * (price - self.mean_price)
        self.min_price = min(self.min_price, price)
        self.max_price = max(self.max_price, price)

        key = (trade.event_time, trade.trade_id)
        if self.open_key is None or key < self.open_key:
            self.open_key, self.open_price = key, price
        if self.close_key is None or key > self.close_key:
            self.close_key, self.close_price = key, price
        return self

    def merge(self, other: WindowAccumulator) -> WindowAccumulator:
        """Folds `other` into self (Chan et al. for the variance); returns self. `other` is left unchanged."""
        if other.trade_count == 0:
            return self
        if self.trade_count == 0:
            self._restore(other.to_tuple())
            return self
        count_a, count_b = self.trade_count, other.trade_count
        count = count_a + count_b
        delta = other.mean_price - self.mean_price
        self.mean_price += delta * count_b / count
        self.m2_price += other.m2_price + delta * delta * count_a * count_b / count

        self.trade_count = count
        self.buy_count += other.buy_count
        self.sell_count += other.sell_count
        self.volume += other.volume
        self.notional += other.notional
        self.min_price = min(self.min_price, other.min_price)
        self.max_price = max(self.max_price, other.max_price)
        if other.open_key < self.open_key:
            self.open_key, self.open_price = other.open_key, other.open_price
        if other.close_key > self.close_key:
            self.close_key, self.close_price = other.close_key, other.close_price
        return self

    def to_tuple(self) -> tuple:
        """Flat tuple of ints, floats, strings and None: picklable, cheap to (de)serialise as Flink state."""
        open_time, open_id = self.open_key if self.open_key is not None else (None, None)
        close_time, close_id = self.close_key if self.close_key is not None else (None, None)
        return (
            self.trade_count,
            self.buy_count,
            self.sell_count,
            self.volume,
            self.notional,
            self.mean_price,
            self.m2_price,
            self.min_price,
            self.max_price,
            open_time,
            open_id,
            self.open_price,
            close_time,
            close_id,
            self.close_price,
        )

    @classmethod
    def from_tuple(cls, values: tuple | list) -> WindowAccumulator:
        accumulator = cls()
        accumulator._restore(values)
        return accumulator

    def _restore(self, values: tuple | list) -> None:
        (
            self.trade_count,
            self.buy_count,
            self.sell_count,
            self.volume,
            self.notional,
            self.mean_price,
            self.m2_price,
            self.min_price,
            self.max_price,
            open_time,
            open_id,
            self.open_price,
            close_time,
            close_id,
            self.close_price,
        ) = values
        self.open_key = None if open_time is None else (open_time, open_id)
        self.close_key = None if close_time is None else (close_time, close_id)

    def to_metrics(self, symbol: str, window_start: int, window_end: int) -> WindowMetrics:
        """The row for the window [window_start, window_end) in epoch ms (Flink's TimeWindow start/end)."""
        if self.trade_count == 0:
            raise ValueError(f"no trades in window {symbol} [{window_start}, {window_end})")
        size_ms = window_end - window_start
        if size_ms <= 0 or size_ms % MILLIS_PER_SECOND:
            raise ValueError(f"window [{window_start}, {window_end}) is not a whole number of seconds")
        # Rounding can leave M2 a hair below zero when all prices are equal up to the last bit.
        stddev = math.sqrt(max(self.m2_price, 0.0) / self.trade_count)
        return WindowMetrics(
            symbol=symbol,
            window_seconds=size_ms // MILLIS_PER_SECOND,
            window_start=window_start,
            window_end=window_end,
            open=self.open_price,
            high=self.max_price,
            low=self.min_price,
            close=self.close_price,
            vwap=self.notional / self.volume,
            volume=self.volume,
            notional=self.notional,
            trade_count=self.trade_count,
            buy_count=self.buy_count,
            sell_count=self.sell_count,
            min_price=self.min_price,
            max_price=self.max_price,
            avg_price=self.mean_price,
            stddev_price=stddev,
        )


def aggregate_windows(trades: Iterable[Trade], size_seconds: int) -> list[WindowMetrics]:
    """All windows of `trades` (any order) sorted by (symbol, window_start): a job's output, no late data."""
    size_ms = size_seconds * MILLIS_PER_SECOND
    accumulators: dict[tuple[str, int], WindowAccumulator] = {}
    for trade in trades:
        key = (trade.symbol, window_start_ms(trade.event_time, size_ms))
        accumulator = accumulators.get(key)
        if accumulator is None:
            accumulator = accumulators[key] = WindowAccumulator()
        accumulator.add(trade)
    return [accumulators[key].to_metrics(key[0], key[1], key[1] + size_ms) for key in sorted(accumulators)]
