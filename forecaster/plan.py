"""What the forecaster fits, and from which origins: pure functions over a symbol's bars and the
ForecastConfig (the models themselves are marketpulse/analytics/forecasting.py)."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from forecaster.config import ForecastConfig
from marketpulse.analytics.forecasting import (
    Forecast,
    ForecastError,
    arima_forecast,
    conformal_scale,
    interval_score,
    linear_forecast,
    regular_closes,
    scaled,
)


@dataclass(frozen=True)
class Fitted:
    origin_ms: int             # window_start of the last bar used
    origin_close: float
    bars_used: int             # bars on the regular grid, gaps filled
    forecasts: tuple[Forecast, ...]
    scales: tuple[float, ...] = ()  # per forecast: what its interval was multiplied by (1: not calibrated)


def fit_at(starts_ms: list[int], closes: list[float], origin_index: int, config: ForecastConfig,
           flagged: list[bool] | None = None, scales: Mapping[str, float | None] | None = None) -> Fitted:
    """Both models fitted on the bars of the history_bars before and including bar `origin_index` (the bars
    are oldest first). A `flagged` close (a trade the detector flagged: an injected or real one-trade spike
    that happened to close its bar) is left out like a bar without trades: the price was back at once, and
    one 30 % spike among 30 closes dominates both models' fits.
    `scales` (model -> factor, from Calibration.scale) widens or narrows each model's interval.
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
    raw = (arima_forecast(grid, horizon, level, config.max_p, config.max_d, config.max_q),
           linear_forecast(grid, horizon, level))
    factors = tuple((scales or {}).get(forecast.model) or 1.0 for forecast in raw)
    forecasts = tuple(scaled(forecast, factor) if factor != 1.0 else forecast
                      for forecast, factor in zip(raw, factors, strict=True))
    return Fitted(origin_ms, float(grid[-1]), len(grid), forecasts, factors)


@dataclass(frozen=True)
class Score:
    """A scored forecast's conformity score (marketpulse.analytics.forecasting.interval_score)."""
    symbol: str
    model: str
    target_ms: int
    score: float


class Calibration:
    """The scores one round calibrates with, and the factor each fit's interval gets from them. A factor at
    an origin uses only forecasts whose target bar had happened by then (target start <= origin start), the
    symbol's last `calibration_scores` of them, or every symbol's last ones while the symbol has fewer than
    `calibration_min_scores`; None (not calibrated) while even those are too few. Live, the scores come from
    the forecasts table; in a backtest, record() adds each fit's as the bars it forecast are known."""

    def __init__(self, config: ForecastConfig, scores: Iterable[Score] = ()):
        self.config = config
        self._by_key: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
        for score in scores:
            self.add(score)

    def add(self, score: Score) -> None:
        bisect.insort(self._by_key[(score.symbol, score.model)], (score.target_ms, score.score))

    def scale(self, symbol: str, model: str, origin_ms: int) -> float | None:
        c = self.config
        if not c.calibration_scores:
            return None
        own = self._by_key.get((symbol, model), [])
        own = own[:bisect.bisect_right(own, (origin_ms, float("inf")))][-c.calibration_scores:]
        if len(own) < c.calibration_min_scores:
            pooled = sorted(entry for (_, m), entries in self._by_key.items() if m == model
                            for entry in entries if entry[0] <= origin_ms)
            own = pooled[-c.calibration_scores:]
        return conformal_scale([score for _, score in own], c.interval_level, c.calibration_min_scores)

    def record(self, symbol: str, starts_ms: list[int], closes: list[float], fitted: Fitted,
               flagged: list[bool] | None = None) -> list[tuple[Score, bool]]:
        """Backtest: the scores of the fit's forecasts whose target bar is among these bars (not a flagged
        close, which is not scored, as in the forecasts table); returns each with whether the actual close
        fell inside the forecast's (calibrated) interval."""
        bar_ms = self.config.bar_seconds * 1000
        index = {start: i for i, start in enumerate(starts_ms)}
        recorded = []
        for forecast, factor in zip(fitted.forecasts, fitted.scales or (1.0,) * len(fitted.forecasts),
                                    strict=True):
            for h, (point, lower, upper) in enumerate(zip(forecast.point, forecast.lower, forecast.upper,
                                                          strict=True), start=1):
                target = fitted.origin_ms + h * bar_ms
                i = index.get(target)
                if i is None or (flagged and flagged[i]):
                    continue
                score = interval_score(point, lower, upper, closes[i], factor)
                if score is not None:
                    entry = Score(symbol, forecast.model, target, score)
                    self.add(entry)
                    recorded.append((entry, lower <= closes[i] <= upper))
        return recorded


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
