"""What the forecaster fits, and from which origins: pure functions over a symbol's bars and the
ForecastConfig (the models themselves are marketpulse/analytics/forecasting.py)."""

from __future__ import annotations

from dataclasses import dataclass

from forecaster.config import ForecastConfig
from marketpulse.analytics.forecasting import (
    Forecast,
    ForecastError,
    arima_forecast,
    linear_forecast,
    regular_closes,
)


@dataclass(frozen=True)
class Fitted:
    origin_ms: int             # window_start of the last bar used
    origin_close: float
    bars_used: int             # bars on the regular grid, gaps filled
    forecasts: tuple[Forecast, ...]


def fit_at(starts_ms: list[int], closes: list[float], origin_index: int, config: ForecastConfig,
           flagged: list[bool] | None = None) -> Fitted:
    """Both models fitted on the bars of the history_bars before and including bar `origin_index` (the bars
    are oldest first). A `flagged` close (a trade the detector flagged: an injected or real one-trade spike
    that happened to close its bar) is left out like a bar without trades: the price was back at once, and
    one 30 % spike among 30 closes dominates both models' fits.
    ForecastError when fewer than min_bars bars are there, or no ARIMA order fits."""
    bar_ms = config.bar_seconds * 1000
    origin_ms = starts_ms[origin_index]
    first = origin_ms - (config.history_bars - 1) * bar_ms
    chosen = [i for i in range(origin_index + 1) if starts_ms[i] >= first]
    values = [float("nan") if flagged and flagged[i] else closes[i] for i in chosen]
    grid = regular_closes([starts_ms[i] for i in chosen], values, bar_ms)
    if len(grid) < config.min_bars:
        raise ForecastError(f"{len(grid)} bars, {config.min_bars} needed (forecast.min_bars)")
    level, horizon = config.interval_level, config.horizon_bars
    forecasts = (arima_forecast(grid, horizon, level, config.max_p, config.max_d, config.max_q),
                 linear_forecast(grid, horizon, level))
    return Fitted(origin_ms, float(grid[-1]), len(grid), forecasts)


def backtest_origins(starts_ms: list[int], config: ForecastConfig, step: int | None = None) -> list[int]:
    """Indices of the bars a backtest forecasts from: the newest bar, and every refit_bars bars of event time
    before it while min_bars bars of history are there (what the live loop, refitting every refit_minutes,
    would have done on these bars); `step` bars apart instead when given."""
    if not starts_ms:
        return []
    bar_ms, step = config.bar_seconds * 1000, step or config.refit_bars
    wanted = set()
    origin = starts_ms[-1]
    while origin >= starts_ms[0] + (config.min_bars - 1) * bar_ms:
        wanted.add(origin)
        origin -= step * bar_ms
    # A wanted time without its own bar (no trade then) is skipped: an origin is a bar that happened.
    return [i for i, start in enumerate(starts_ms) if start in wanted]


def error_table(rows) -> str:
    """The error figures as a text table: a row per (symbol, model) of `rows` (store.ErrorRow)."""
    lines = [f"{'symbol':<12} {'model':<8} {'spec':<14} {'forecasts':>9} {'MAE':>9} {'MAPE %':>8} "
             f"{'in interval':>11} {'not scored':>10}"]
    for row in rows:
        s = row.summary
        figures = (f"{s.mae:>9.4f} {s.mape:>8.4f} {s.coverage:>11.1%}" if s.n
                   else f"{'-':>9} {'-':>8} {'-':>11}")
        lines.append(f"{row.symbol:<12} {row.model:<8} {row.spec or '-':<14} {s.n:>9,} {figures} "
                     f"{row.flagged:>10,}")
    return "\n".join(lines)
