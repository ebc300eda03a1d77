"""The forecaster's rounds: bars in (forecaster/store.py), fits (forecaster/plan.py), forecasts, errors out.
The contract is in forecaster/__init__.py."""

from __future__ import annotations

import sys
import time
from collections import Counter
from datetime import datetime

from alerts.service import StopFlag
from forecaster.config import ForecastConfig
from forecaster.plan import Calibration, backtest_origins, error_table, fit_at
from forecaster.store import ALL_SYMBOLS, DatabaseDown, SchemaMissing, Store, first_line, to_timestamp
from marketpulse.analytics.forecasting import ARIMA, MODEL_LABELS, MODELS, ForecastError
from marketpulse.config import Settings, postgres_dsn

# While no symbol can be forecast yet (no bars, too few) or PostgreSQL is down: the next try, in seconds.
RETRY_SECONDS = 15


def say(message: str) -> None:
    """One line on stderr, with the wall-clock time: what a person tailing the log reads."""
    print(f"{datetime.now():%Y-%m-%d %H:%M:%S} forecaster: {message}", file=sys.stderr, flush=True)


def describe_factors(factors: dict[str, list[float]]) -> str:
    """'intervals calibrated: ARIMA x1.42, Linear trend x1.31 (median), ...' for the round's log line."""
    parts = []
    for model, values in factors.items():
        calibrated = sorted(value for value in values if value != 1.0)
        if calibrated:
            parts.append(f"{MODEL_LABELS[model]} x{calibrated[len(calibrated) // 2]:.2f} (median of "
                         f"{len(calibrated)} of {len(values)} fits)")
    return "intervals calibrated: " + ", ".join(parts) if parts else "intervals not calibrated yet"


class Forecaster:
    def __init__(self, settings: Settings, config: ForecastConfig, stop: StopFlag | None = None,
                 store: Store | None = None):
        self.config = config
        self.stop = stop if stop is not None else StopFlag()
        pg = settings.postgres
        self.store = store or Store(postgres_dsn(settings, "writer"), f"{pg.host}:{pg.port}/{pg.database}")
        self.db_down_since: float | None = None
        self.waiting_for_bars = False  # said once while window_metrics has no bars to read

    # --- one round ---------------------------------------------------------------------------------

    def fit_round(self, backtest_step: int | None = None) -> tuple[int, dict[str, str]]:
        """Fits every symbol with a new bar (or, in a backtest, from every backtest origin) and writes the
        forecasts; returns (fits made, {symbol: why it was not fitted})."""
        c = self.config
        bars = self.store.bars(c.engine, c.bar_seconds, None if backtest_step else c.history_bars)
        done = {} if backtest_step else self.store.latest_origins(c.bar_seconds)
        if not bars and not self.waiting_for_bars:
            say(f"no {c.bar_seconds} s bars of the {c.engine} engine in window_metrics yet; waiting for them")
        self.waiting_for_bars = not bars
        fits, fitted_symbols, skipped, specs = 0, set(), {}, Counter()
        # A backtest learns its calibration as it goes (origins in time order, no score from the future);
        # live, from every forecast scored so far.
        calibration = Calibration(c, () if backtest_step or not c.calibration_scores
                                  else self.store.scores(c.bar_seconds, c.calibration_scores))
        factors: dict[str, list[float]] = {model: [] for model in MODELS}
        started = time.monotonic()
        for series in bars:
            if self.stop:
                break
            if backtest_step:
                origins = backtest_origins(series.starts_ms, c, backtest_step)
                if not origins:
                    skipped[series.symbol] = f"{len(series.starts_ms)} bars, {c.min_bars} needed"
            elif series.starts_ms[-1] > done.get(series.symbol, -1):
                origins = [len(series.starts_ms) - 1]
            else:
                origins = []  # no new bar since its last forecast
            for index in origins:
                scales = {model: calibration.scale(series.symbol, model, series.starts_ms[index])
                          for model in MODELS}
                try:
                    fitted = fit_at(series.starts_ms, series.closes, index, c, series.flagged, scales)
                except ForecastError as err:
                    skipped[series.symbol] = str(err)
                    continue
                except ValueError as err:  # numpy's LinAlgError too: a fit statsmodels could not finish
                    skipped[series.symbol] = f"no fit this round: {type(err).__name__}: {first_line(err)}"
                    continue
                self.store.write_forecasts(series.symbol, c.bar_seconds, c.engine, fitted.origin_ms,
                                           fitted.origin_close, fitted.bars_used, fitted.forecasts,
                                           fitted.scales)
                if backtest_step:
                    calibration.record(series.symbol, series.starts_ms, series.closes, fitted, series.flagged)
                for forecast, factor in zip(fitted.forecasts, fitted.scales, strict=True):
                    factors[forecast.model].append(factor)
                specs[fitted.forecasts[0].spec] += 1
                fits += 1
                fitted_symbols.add(series.symbol)
        if fits:
            newest = max(series.starts_ms[-1] for series in bars)
            orders = ", ".join(f"{spec} x{n}" for spec, n in specs.most_common())
            say(f"{fits} fit{'s' if fits > 1 else ''} ({len(fitted_symbols)} symbols, bars up to "
                f"{to_timestamp(newest):%Y-%m-%d %H:%M} UTC) in {time.monotonic() - started:.1f} s; "
                f"{MODEL_LABELS[ARIMA]} orders: {orders}; {describe_factors(factors)}")
        if skipped:
            say("not forecast yet: " + "; ".join(f"{symbol} ({why})"
                                                 for symbol, why in sorted(skipped.items())))
        return fits, skipped

    def score_round(self):
        """Fills in the actual closes that have happened and rewrites forecast_errors; returns its rows."""
        filled = self.store.fill_actuals(self.config.engine, self.config.bar_seconds)
        rows = self.store.update_errors(self.config.bar_seconds)
        if filled:
            totals = [row for row in rows if row.symbol == ALL_SYMBOLS]
            say(f"{filled} forecasts met their bar; over all symbols so far: " + "; ".join(
                f"{MODEL_LABELS[row.model]} MAPE {row.summary.mape:.3f} %, MAE {row.summary.mae:.4f}, "
                f"{row.summary.coverage:.0%} in the interval ({row.summary.n:,} forecasts)"
                for row in totals))
        return rows

    # --- the loop ----------------------------------------------------------------------------------

    def start(self, wait: bool = True) -> None:
        """Checks the tables; while PostgreSQL is down, waits for it (or, with wait=False, raises)."""
        say("starting: " + self.config.describe())
        while not self.stop:
            try:
                if not self.store.check_schema():
                    raise SchemaMissing(f"the database {self.store.where} has no forecasts/forecast_errors "
                                        "tables: apply db/schema/011_forecasts.sql (make up, or python -m "
                                        "stack init)")
                self.database_ok()
                return
            except DatabaseDown as err:
                if not wait:
                    raise
                self.database_trouble(err)

    def run(self) -> int:
        self.start()
        while not self.stop:
            started = time.monotonic()
            try:
                fits, _ = self.fit_round()
                self.score_round()
                self.database_ok()
            except DatabaseDown as err:
                self.database_trouble(err)
                continue
            wait = self.config.refit_minutes * 60 if fits else RETRY_SECONDS
            self.stop.sleep(max(0.0, wait - (time.monotonic() - started)))
        self.store.close()
        say("stopped")
        return 0

    def once(self, backtest_step: int | None = None) -> int:
        """One round (a backtest with a step), then the error table on stdout."""
        try:
            self.start(wait=False)
            self.fit_round(backtest_step)
            rows = self.score_round()
        except DatabaseDown as err:
            say(f"error: PostgreSQL at {self.store.where} unreachable ({first_line(err)})")
            return 1
        finally:
            self.store.close()
        print(error_table(rows) if rows else "no forecast has reached its target bar yet", flush=True)
        return 0

    def database_trouble(self, err: Exception) -> None:
        now = time.monotonic()
        if self.db_down_since is None:
            self.db_down_since = now
            say(f"PostgreSQL at {self.store.where} unreachable ({first_line(err)}); retrying every "
                f"{RETRY_SECONDS} s")
        self.stop.sleep(RETRY_SECONDS)

    def database_ok(self) -> None:
        if self.db_down_since is not None:
            say(f"PostgreSQL at {self.store.where} reachable again after "
                f"{time.monotonic() - self.db_down_since:.0f} s")
            self.db_down_since = None
