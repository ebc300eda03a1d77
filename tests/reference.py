"""Slow, obviously-correct reference results for the tests to compare the pipeline against.

Written apart from marketpulse.analytics on purpose (no import from it): windows are plain lists grouped in a
dict, sums are exact (math.fsum), the standard deviation is statistics.pstdev (exact rational arithmetic), and
the detector recomputes its baselines from scratch for every trade. A mistake shared by both would have to be
made twice in two different ways. The SQL job's indicators are checked against the formulas of
docs/indicators.md here: the EMAs with pandas' own ewm (recursive) over each bar's last values, where the SQL
builds the same weights by doubling sums of LAGs.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence

import pandas as pd

from marketpulse.trade import Trade


def reference_windows(trades: Iterable[Trade], size_seconds: int) -> list[dict]:
    """One dict per (symbol, tumbling window), keyed by window_metrics column, sorted by (symbol, start)."""
    size_ms = size_seconds * 1000
    groups: dict[tuple[str, int], list[Trade]] = defaultdict(list)
    for trade in trades:
        groups[(trade.symbol, trade.event_time // size_ms * size_ms)].append(trade)

    rows = []
    for (symbol, start), members in sorted(groups.items()):
        in_time_order = sorted(members, key=lambda trade: (trade.event_time, trade.trade_id))
        prices = [trade.price for trade in members]
        volume = sum(trade.size for trade in members)
        notional = math.fsum(trade.price * trade.size for trade in members)
        rows.append(
            {
                "symbol": symbol,
                "window_seconds": size_seconds,
                "window_start": start,
                "window_end": start + size_ms,
                "open": in_time_order[0].price,
                "high": max(prices),
                "low": min(prices),
                "close": in_time_order[-1].price,
                "vwap": notional / volume,
                "volume": volume,
                "notional": notional,
                "trade_count": len(members),
                "buy_count": sum(1 for trade in members if trade.side == "BUY"),
                "sell_count": sum(1 for trade in members if trade.side == "SELL"),
                "min_price": min(prices),
                "max_price": max(prices),
                "avg_price": statistics.fmean(prices),
                "stddev_price": statistics.pstdev(prices),
            }
        )
    return rows


def reference_anomalies(
    trades: Iterable[Trade],
    *,
    lookback: int,
    warmup: int,
    z_threshold: float,
    price_jump_pct: float,
    volume_z_threshold: float,
    volume_min_stddev: float,
    tick_size: float,
    min_stddev_ticks: float,
) -> list[tuple[str, str, float]]:
    """(trade_id, rule, statistic) per anomaly, for the trades of ONE symbol in arrival order.

    The rules of marketpulse/analytics/detector.py as its docstring states them, baselines recomputed from
    plain lists each time: a price return over its event-time gap, measured against the spread
    max(sqrt(sum r^2 / sum gaps * gap), min_stddev_ticks ticks) of the accepted returns; returns against the
    last price that broke no price rule, flagged returns kept out, a trade that is ordinary from the flagged
    price just before it accepted as a new level, and a flagged ln(size) learnt clipped to
    mean + volume_z_threshold * stddev.
    """
    returns: list[tuple[float, float]] = []  # (log return, gap in seconds)
    log_sizes: list[float] = []
    reference = None  # (price, event_time)
    flagged = None
    found = []

    def gap(trade: Trade, base: tuple[float, int]) -> float:
        return abs(trade.event_time - base[1]) / 1000

    def price_rules(trade: Trade, base: tuple[float, int]) -> list[tuple[str, float]]:
        broken = []
        log_return = math.log(trade.price / base[0])
        total_gap = sum(seconds for _, seconds in returns)
        squares = math.fsum(value * value for value, _ in returns)
        per_trade = squares / total_gap * gap(trade, base) if total_gap > 0 else squares / len(returns)
        spread = max(math.sqrt(per_trade), min_stddev_ticks * tick_size / base[0])
        if spread > 0 and abs(log_return / spread) > z_threshold:
            broken.append(("price_zscore", log_return / spread))
        move_pct = (trade.price / base[0] - 1) * 100
        if abs(move_pct) >= price_jump_pct:
            broken.append(("price_jump", move_pct))
        return broken

    for trade in trades:
        log_size = math.log(trade.size)
        if reference is None:
            reference = (trade.price, trade.event_time)
            log_sizes.append(log_size)
            continue
        if len(returns) < warmup:
            returns.append((math.log(trade.price / reference[0]), gap(trade, reference)))
            reference = (trade.price, trade.event_time)
            log_sizes.append(log_size)
            del returns[:-lookback], log_sizes[:-lookback]
            continue

        broken = price_rules(trade, reference)
        base = reference
        if broken and flagged is not None and not price_rules(trade, flagged):
            broken, base = [], flagged
        if broken:
            flagged = (trade.price, trade.event_time)
        else:
            returns.append((math.log(trade.price / base[0]), gap(trade, base)))
            reference, flagged = (trade.price, trade.event_time), None

        size_mean, size_stddev = statistics.fmean(log_sizes), statistics.pstdev(log_sizes)
        learnt_size = log_size
        if size_stddev > volume_min_stddev and (log_size - size_mean) / size_stddev > volume_z_threshold:
            broken.append(("volume_zscore", (log_size - size_mean) / size_stddev))
            learnt_size = size_mean + volume_z_threshold * size_stddev
        log_sizes.append(learnt_size)
        del returns[:-lookback], log_sizes[:-lookback]

        found.extend((trade.trade_id, rule, statistic) for rule, statistic in broken)
    return found


# The EMAs of docs/indicators.md weigh the last 128 bars (SQL has no recursion; sql/include/ema.sql).
EMA_TERMS = 128


def truncated_ema(values: Sequence[float], span: int, terms: int = EMA_TERMS) -> list[float]:
    """At each position t: pandas ewm(span, adjust=True).mean() over the last `terms` values up to t, which is
    sum_i q^i x_{t-i} / sum_i q^i for i < min(t + 1, terms), q = 1 - 2 / (span + 1)."""
    return [float(pd.Series(values[max(0, t - terms + 1): t + 1], dtype=float)
                  .ewm(span=span, adjust=True).mean().iloc[-1])
            for t in range(len(values))]


def reference_indicators(bars: list[dict], periods) -> list[dict]:
    """The indicators row of each bar of ONE symbol (reference_windows rows in time order), by the formulas
    of docs/indicators.md with `periods` = settings.indicators (sma_bars, bollinger_k, ewma_span, ...)."""
    closes = [bar["close"] for bar in bars]
    ewma = truncated_ema(closes, periods.ewma_span)
    fast, slow = truncated_ema(closes, periods.ema_fast_span), truncated_ema(closes, periods.ema_slow_span)
    macd = [f - s for f, s in zip(fast, slow, strict=True)]
    signal = truncated_ema(macd, periods.macd_signal_span)
    rows = []
    for i, bar in enumerate(bars):
        row = {"symbol": bar["symbol"], "bar_start": bar["window_start"], "bar_end": bar["window_end"],
               "close": closes[i], "sma": None, "bollinger_upper": None, "bollinger_lower": None,
               "ewma": ewma[i], "ema_fast": fast[i], "ema_slow": slow[i], "macd": macd[i],
               "macd_signal": signal[i], "macd_histogram": macd[i] - signal[i], "sma_long": None,
               "volatility": None, "rsi": None, "sigma": None}
        if i + 1 >= periods.sma_bars:
            last = closes[i + 1 - periods.sma_bars: i + 1]
            row["sma"], row["sigma"] = statistics.fmean(last), statistics.pstdev(last)
            spread = periods.bollinger_k * row["sigma"]
            row["bollinger_upper"], row["bollinger_lower"] = row["sma"] + spread, row["sma"] - spread
        if i + 1 >= periods.sma_long_bars:
            row["sma_long"] = statistics.fmean(closes[i + 1 - periods.sma_long_bars: i + 1])
        if i >= periods.volatility_returns:
            row["volatility"] = statistics.stdev(math.log(closes[j] / closes[j - 1])
                                                 for j in range(i + 1 - periods.volatility_returns, i + 1))
        if i >= periods.rsi_changes:
            changes = [closes[j] - closes[j - 1] for j in range(i + 1 - periods.rsi_changes, i + 1)]
            gains = math.fsum(max(c, 0.0) for c in changes)
            losses = math.fsum(max(-c, 0.0) for c in changes)
            row["rsi"] = 100 * gains / (gains + losses) if gains + losses > 0 else None
        rows.append(row)
    return rows


def reference_indicator_alerts(rows: list[dict], overbought: float, oversold: float,
                               margin: float = 1e-9) -> tuple[dict, set]:
    """The alert rules of docs/indicators.md over ONE symbol's reference_indicators rows (time order):
    {(trade_id, rule): (event_time, price, statistic, mean)} of the bars that cross a level, and the keys
    whose decision rests on a comparison closer than `margin` (relative) to equality, which rounding in the
    engine may tip either way (an RSI of exactly 70 from cent prices)."""
    fired, borderline = {}, set()
    previous = dict.fromkeys(rows[0]) if rows else {}
    for row in rows:
        bar = f"{row['symbol']}@{row['bar_end']}"
        z = (row["close"] - row["sma"]) / row["sigma"] if row["sigma"] else None
        # rule: (value, side, level, the previous bar's value and level, statistic, mean); a rule fires when
        # the value is beyond its level and the previous bar's was not (or had none).
        rules = {
            "rsi_overbought": (row["rsi"], ">", overbought, previous["rsi"], overbought, row["rsi"],
                               overbought),
            "rsi_oversold": (row["rsi"], "<", oversold, previous["rsi"], oversold, row["rsi"], oversold),
            "bollinger_upper_break": (row["close"], ">", row["bollinger_upper"], previous["close"],
                                      previous["bollinger_upper"], z, row["sma"]),
            "bollinger_lower_break": (row["close"], "<", row["bollinger_lower"], previous["close"],
                                      previous["bollinger_lower"], z, row["sma"]),
        }
        for rule, (value, side, level, before, before_level, statistic, mean) in rules.items():
            if value is None or level is None:
                continue
            beyond = value > level if side == ">" else value < level
            was_beyond = before is not None and before_level is not None and (
                before > before_level if side == ">" else before < before_level)
            pairs = [(value, level), (before, before_level)]
            if any(a is not None and b is not None and abs(a - b) <= margin * max(abs(a), abs(b), 1.0)
                   for a, b in pairs):
                borderline.add((bar, rule))
            if beyond and not was_beyond:
                fired[(bar, rule)] = (row["bar_end"], row["close"], statistic, mean)
        previous = row
    return fired, borderline


def reference_window_scores(windows: Sequence[dict], *, history: int, warmup: int, threshold: float,
                            tick_size: float, relearn: int = 5, top: int = 3) -> list[dict]:
    """The multivariate detector's rows (marketpulse/analytics/multivariate.py, as its docstring states it)
    for the window rows of ONE symbol and size (reference_windows' dicts) in window order, recomputed from
    plain lists for every window: the six features; per feature the median of the last `history` windows
    and the root mean square of the deviations from it, each clipped to 3 x 1.4826 x their median absolute
    value, floored at one tick over the VWAP (price features) or 0.01; score = the largest squared z of
    (return, range, vwap_dev) + the larger of (volume, trades) + imbalance's; after `relearn` anomalous
    windows in a row, the baseline is those windows only."""
    def features(row: dict) -> dict[str, float]:
        return {"return": math.log(row["close"] / row["open"]), "range": math.log(row["high"] / row["low"]),
                "volume": math.log(row["volume"]), "trades": math.log(row["trade_count"]),
                "imbalance": (row["buy_count"] - row["sell_count"]) / row["trade_count"],
                "vwap_dev": math.log(row["close"] / row["vwap"])}

    seen: list[dict[str, float]] = []
    scored = []
    run = 0
    for row in windows:
        values = features(row)
        baseline = seen[-history:]
        if len(baseline) >= warmup:
            z = {}
            for name, value in values.items():
                column = [past[name] for past in baseline]
                center = statistics.median(column)
                limit = 3 * 1.4826 * statistics.median(abs(x - center) for x in column)
                clipped = [min(abs(x - center), limit) for x in column]
                spread = math.sqrt(math.fsum(d * d for d in clipped) / len(clipped))
                floor = tick_size / row["vwap"] if name in ("return", "range", "vwap_dev") else 0.01
                z[name] = (value - center) / max(spread, floor)
            score = (max(z["return"] ** 2, z["range"] ** 2, z["vwap_dev"] ** 2)
                     + max(z["volume"] ** 2, z["trades"] ** 2) + z["imbalance"] ** 2)
            ranked = sorted(z, key=lambda name: abs(z[name]), reverse=True)[:top]
            scored.append({"symbol": row["symbol"], "window_start": row["window_start"],
                           "window_end": row["window_end"], "score": score, "anomalous": score > threshold,
                           "z": {name: z[name] for name in ranked}})
        seen.append(values)
        run = run + 1 if len(baseline) >= warmup and score > threshold else 0
        if run == relearn:
            seen, run = seen[-relearn:], 0
    return scored


def reference_sql_price_zscores(
    trades: Sequence[Trade],
    *,
    lookback: int,
    warmup: int,
    z_threshold: float,
    price_jump_pct: float,
    tick_size: float,
    min_stddev_ticks: float,
) -> dict[str, tuple[float, float]]:
    """{trade_id: (z, spread)} of the SQL job's price z-score rule (sql/anomalies.sql, as its header states
    it) over ONE symbol's on-time trades in event-time order (ties in arrival order).

    For trade i: returns of trades i-lookback .. i-1 (each against the trade before it) that moved the price
    by less than price_jump_pct form the baseline; spread over a gap g from a price p is
    max(sqrt(sum r^2 / sum gaps * g), min_stddev_ticks * tick_size / p) (per trade if the gaps sum to 0);
    the trade fires when the baseline has `warmup` returns or more, |r / spread| > z_threshold from the
    previous trade and, if there is one, from the trade before that too."""
    ordered = sorted(trades, key=lambda trade: trade.event_time)  # stable: ties stay in arrival order
    # (log return, gap ms) of each trade against the one before it, None where the baseline leaves it out.
    baseline_returns: list[tuple[float, int] | None] = [None]
    for before, trade in zip(ordered, ordered[1:], strict=False):
        move_pct = abs(trade.price / before.price - 1) * 100
        baseline_returns.append((math.log(trade.price / before.price), trade.event_time - before.event_time)
                                if move_pct < price_jump_pct else None)

    def spread(squares: float, gaps_ms: int, count: int, gap_ms: int, base_price: float) -> float:
        per_trade = squares / gaps_ms * gap_ms if gaps_ms > 0 else squares / count
        return max(math.sqrt(per_trade), min_stddev_ticks * tick_size / base_price)

    fired = {}
    for i in range(1, len(ordered)):
        baseline = [item for item in baseline_returns[max(0, i - lookback): i] if item is not None]
        if len(baseline) < warmup:
            continue
        squares = math.fsum(value * value for value, _ in baseline)
        gaps_ms = sum(gap for _, gap in baseline)
        trade, before = ordered[i], ordered[i - 1]
        width = spread(squares, gaps_ms, len(baseline), trade.event_time - before.event_time, before.price)
        z = math.log(trade.price / before.price) / width
        if not (width > 0 and abs(z) > z_threshold):
            continue
        if i >= 2:
            earlier = ordered[i - 2]
            width2 = spread(squares, gaps_ms, len(baseline), trade.event_time - earlier.event_time,
                            earlier.price)
            if not abs(math.log(trade.price / earlier.price) / width2) > z_threshold:
                continue
        fired[trade.trade_id] = (z, width)
    return fired
