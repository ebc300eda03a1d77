"""marketpulse/analytics/forecasting.py and forecaster/plan.py against independent computations: series whose
right answer is known (an exact line, a random walk, an AR(1)), statsmodels' own fits and OLS prediction
intervals, and errors worked out by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from forecaster.config import ForecastConfig
from forecaster.plan import Calibration, Score, backtest_origins, error_table, fit_at
from forecaster.store import ErrorRow
from marketpulse.analytics.forecasting import (
    ARIMA,
    LINEAR,
    ForecastError,
    arima_forecast,
    candidate_orders,
    choose_differencing,
    conformal_scale,
    error_summary,
    interval_score,
    linear_forecast,
    regular_closes,
    scaled,
    select_arima_order,
)
from marketpulse.config import ConfigError, load_settings

SETTINGS = load_settings(environ={})


def random_walk(seed: int, n: int = 120) -> np.ndarray:
    return 100 + np.cumsum(np.random.default_rng(seed).normal(0, 0.05, n))


def ar1(seed: int, phi: float, n: int = 120) -> np.ndarray:
    shocks = np.random.default_rng(seed).normal(0, 1, n)
    values = np.zeros(n)
    for i in range(1, n):
        values[i] = phi * values[i - 1] + shocks[i]
    return 50 + values


def test_regular_closes_carries_a_bar_without_trades_forward_and_sorts():
    # Bars at 0, 1, 3 (2 missing), given out of order.
    grid = regular_closes([180_000, 0, 60_000], [103.0, 100.0, 101.0], 60_000)
    assert grid.tolist() == [100.0, 101.0, 101.0, 103.0]
    assert regular_closes([], [], 60_000).tolist() == []


def test_linear_forecast_of_an_exact_line_is_the_line_with_a_zero_width_interval():
    closes = [100 + 0.25 * i for i in range(30)]
    forecast = linear_forecast(closes, horizon=3, level=0.95)
    assert forecast.model == LINEAR
    assert forecast.point == pytest.approx([107.5, 107.75, 108.0])
    assert forecast.lower == pytest.approx(forecast.point) and forecast.upper == pytest.approx(forecast.point)


def test_linear_forecast_interval_is_the_ols_prediction_interval():
    """Against statsmodels' OLS with an explicit design matrix (its obs_ci_* are the prediction interval)."""
    import statsmodels.api as sm

    closes = random_walk(3, 60)
    forecast = linear_forecast(closes, horizon=5, level=0.9)
    x = sm.add_constant(np.arange(60, dtype=float))
    frame = sm.OLS(closes, x).fit().get_prediction(sm.add_constant(np.arange(60, 65, dtype=float),
                                                                   has_constant="add")).summary_frame(alpha=0.1)
    assert forecast.point == pytest.approx(frame["mean"].tolist(), rel=1e-12)
    assert forecast.lower == pytest.approx(frame["obs_ci_lower"].tolist(), rel=1e-12)
    assert forecast.upper == pytest.approx(frame["obs_ci_upper"].tolist(), rel=1e-12)


def test_differencing_by_kpss_finds_the_random_walks_and_the_stationary_series():
    walks = [choose_differencing(random_walk(seed)) for seed in range(20)]
    stationary = [choose_differencing(ar1(seed, 0.5)) for seed in range(20)]
    # A test at 5 %, on 120 points: it errs now and then, not usually (measured: 17/20 and 17/20).
    assert sum(d == 1 for d in walks) >= 16
    assert sum(d == 0 for d in stationary) >= 16
    assert choose_differencing(random_walk(0), max_d=0) == 0


def test_candidate_orders_go_from_fewest_parameters():
    assert candidate_orders(1, 1, 1) == [(0, 1, 0), (0, 1, 1), (1, 1, 0), (1, 1, 1)]


def test_the_chosen_order_has_the_smallest_aic_of_statsmodels_fits_on_the_grid():
    """Independent: fit every (p, d, q) of the grid with statsmodels here and take the argmin."""
    import warnings

    from statsmodels.tsa.arima.model import ARIMA as StatsmodelsARIMA

    closes = ar1(4, 0.7)
    order, aics, _ = select_arima_order(closes, max_p=2, max_d=1, max_q=1)
    d = choose_differencing(closes, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trend = "c" if d == 0 else "n"
        expected = {(p, d, q): StatsmodelsARIMA(closes, order=(p, d, q), trend=trend).fit().aic
                    for p in range(3) for q in range(2)}
    assert aics == pytest.approx(expected)
    assert order == min(expected, key=expected.get)


def test_the_true_order_is_the_one_chosen_most_often():
    """AIC does not always find the true order (it penalises a parameter by 2, less than its chance gain
    now and then): measured on these seeds, 5 of 10 random walks give (0,1,0) and 6 of 10 AR(1) series
    (1,0,0), each other choice at most once. The true order must stay the most frequent by a margin."""
    from collections import Counter

    walks = Counter(select_arima_order(random_walk(seed))[0] for seed in range(10))
    stationary = Counter(select_arima_order(ar1(seed, 0.8, 200))[0] for seed in range(10))
    assert walks.most_common(1)[0] == ((0, 1, 0), 5) and walks.most_common(2)[1][1] <= 2
    assert stationary.most_common(1)[0] == ((1, 0, 0), 6) and stationary.most_common(2)[1][1] <= 2


def test_arima_forecast_of_a_random_walk_is_the_last_close_with_a_sqrt_h_interval():
    """ARIMA(0,1,0): every point is the last close, the h-step variance h * sigma^2 (sigma^2 fitted)."""
    from scipy.stats import norm

    closes = random_walk(0)
    forecast = arima_forecast(closes, horizon=4, level=0.8)
    assert forecast.model == ARIMA and forecast.spec == "ARIMA(0,1,0)"
    _, _, fit = select_arima_order(closes)
    sigma = math.sqrt(fit.params[-1])  # sigma2, the only parameter of (0,1,0) without a constant
    z = norm.ppf(0.9)
    assert forecast.point == pytest.approx([closes[-1]] * 4)
    half = [z * sigma * math.sqrt(h) for h in range(1, 5)]
    assert np.subtract(forecast.upper, forecast.point) == pytest.approx(half, rel=1e-6)
    assert np.subtract(forecast.point, forecast.lower) == pytest.approx(half, rel=1e-6)


def test_a_series_that_never_moved_stays_with_no_interval_and_too_few_closes_say_so():
    flat = arima_forecast([101.5] * 25, horizon=2, level=0.95)
    assert flat.spec == "constant" and flat.point == flat.lower == flat.upper == (101.5, 101.5)
    with pytest.raises(ForecastError, match="3 closes"):
        arima_forecast([1.0, 2.0, 3.0], horizon=2, level=0.95)
    with pytest.raises(ValueError, match="level"):
        linear_forecast([1.0, 2.0, 4.0], horizon=2, level=95)


def test_error_summary_by_hand():
    rows = [(100.0, 99.0, 101.0, 102.0),   # |e| 2, 2/102, outside
            (50.0, 49.0, 52.0, 51.0),      # |e| 1, 1/51, inside
            (10.0, 9.0, 11.0, 10.0),       # |e| 0, inside
            (10.0, 9.0, 11.0, None)]       # no actual yet: not counted
    summary = error_summary(rows)
    assert summary.n == 3
    assert summary.mae == pytest.approx(1.0)
    assert summary.mape == pytest.approx((2 / 102 + 1 / 51 + 0) / 3 * 100)
    assert summary.coverage == pytest.approx(2 / 3)
    assert error_summary([]).n == 0 and error_summary([]).mape is None


def config(**overrides) -> ForecastConfig:
    values = {**vars(SETTINGS.forecast), **overrides}
    return ForecastConfig.from_settings(SimpleNamespace(forecast=SimpleNamespace(**values),
                                                        windows=SETTINGS.windows))


def test_config_reads_conf_and_refuses_what_cannot_work():
    c = ForecastConfig.from_settings(SETTINGS)
    assert (c.bar_seconds, c.refit_bars, c.engine) == (60, 5, "datastream")
    assert c.min_bars <= c.history_bars
    with pytest.raises(ConfigError, match="forecast.interval_level"):
        config(interval_level=95)
    with pytest.raises(ConfigError, match="engines: datastream, sql"):
        config(engine="spark")
    with pytest.raises(ConfigError, match="unknown key"):
        config(horizon=3)


def test_fit_at_uses_the_history_window_up_to_the_origin_and_fills_gaps():
    minute = 60_000
    starts = [i * minute for i in range(40) if i != 35]  # bar 35 had no trade
    closes = [100 + 0.5 * i for i in range(40) if i != 35]
    c = config(history_bars=20, min_bars=10, horizon_bars=2, max_p=1, max_q=0)  # the grid is not the point
    fitted = fit_at(starts, closes, len(starts) - 1, c)
    assert fitted.origin_ms == 39 * minute and fitted.origin_close == 119.5
    assert fitted.bars_used == 20  # bars 20..39, 35 carried forward from 34
    linear = {f.model: f for f in fitted.forecasts}[LINEAR]
    grid = [100 + 0.5 * i for i in range(20, 40)]
    grid[15] = grid[14]
    expected = np.polyval(np.polyfit(np.arange(20.0), grid, 1), [20.0, 21.0])
    assert linear.point == pytest.approx(expected.tolist())
    with pytest.raises(ForecastError, match="9 bars, 10 needed"):
        fit_at(starts, closes, 8, c)
    # A flagged close (a one-trade spike) counts as a bar without trades: the same fit as without the bar.
    spiked = closes[:34] + [500.0] + closes[35:]
    flagged = [i == 34 for i in range(len(starts))]
    without = fit_at(starts[:34] + starts[35:], closes[:34] + closes[35:], len(starts) - 2, c)
    assert fit_at(starts, spiked, len(starts) - 1, c, flagged) == without
    assert fit_at(starts[:35], spiked[:35], 34, c, flagged).origin_close == closes[33]


def test_backtest_origins_step_back_from_the_newest_bar_while_min_bars_are_there():
    minute = 60_000
    starts = [i * minute for i in range(30)]
    c = config(min_bars=20, refit_minutes=5)
    assert backtest_origins(starts, c) == [19, 24, 29]
    assert backtest_origins(starts, c, step=1) == list(range(19, 30))
    assert backtest_origins(starts[:19], c) == []
    assert backtest_origins([s for s in starts if s != 24 * minute], c) == [19, 28]  # 24 had no bar


def test_error_table_has_a_row_per_symbol_and_model():
    rows = [ErrorRow("AAPL", ARIMA, error_summary([(100.0, 99.0, 101.0, 100.5)]), 0, "ARIMA(0,1,0)", 0.95,
                     None, None),
            ErrorRow("AAPL", LINEAR, error_summary([]), 2, "linear trend", 0.95, None, None)]
    lines = error_table(rows).splitlines()
    assert lines[1].split() == ["AAPL", "arima", "ARIMA(0,1,0)", "1", "0.5000", "0.4975", "100.0%", "0"]
    assert lines[2].split() == ["AAPL", "linear", "linear", "trend", "0", "-", "-", "-", "2"]


# --- calibrated intervals ------------------------------------------------------------------------------

def test_conformal_scale_is_the_ceil_n_plus_1_times_level_th_smallest_score():
    scores = [i / 100 for i in range(1, 101)]  # 0.01 .. 1.00, shuffled below
    shuffled = scores[50:] + scores[:50]
    # n = 100, level 0.95: rank ceil(101 * 0.95) = 96 -> 0.96
    assert conformal_scale(shuffled, 0.95, 50) == 0.96
    assert conformal_scale(shuffled[:40], 0.95, 50) is None          # fewer than the minimum
    assert conformal_scale(shuffled[:18], 0.95, 1) is None           # rank 19 > n = 18: no such quantile
    assert conformal_scale(shuffled[:19], 0.95, 1) == max(shuffled[:19])


def test_interval_score_is_the_miss_in_the_models_own_half_widths():
    assert interval_score(100.0, 98.0, 102.0, 103.0) == 1.5
    # The same stored interval, widened by 2 from the model's: its own half-width was 1, so the miss scores 3.
    assert interval_score(100.0, 98.0, 102.0, 103.0, scale=2.0) == 3.0
    assert interval_score(100.0, 100.0, 100.0, 101.0) is None


def test_scaled_multiplies_each_side_of_the_interval():
    linear = linear_forecast([1.0, 2.0, 2.5, 4.0, 5.5], 2, 0.95)
    wide = scaled(linear, 1.5)
    assert wide.point == linear.point
    for p, lo, up, wlo, wup in zip(linear.point, linear.lower, linear.upper, wide.lower, wide.upper,
                                   strict=True):
        assert (p - wlo, wup - p) == pytest.approx((1.5 * (p - lo), 1.5 * (up - p)))


def test_calibration_uses_only_targets_before_the_origin_and_pools_while_a_symbol_has_too_few():
    c = config(calibration_scores=4, calibration_min_scores=3, interval_level=0.5)
    minute = 60_000
    cal = Calibration(c, [Score("AAPL", ARIMA, t * minute, score) for t, score in
                          [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0), (10, 100.0)]]
                      + [Score("MSFT", ARIMA, 2 * minute, 0.5), Score("AAPL", LINEAR, 1 * minute, 9.0)])
    # Origin at minute 5: AAPL's last 4 scores up to it are 2, 3, 4, 5; rank ceil(5 * 0.5) = 3 -> 4.0.
    assert cal.scale("AAPL", ARIMA, 5 * minute) == 4.0
    # Origin at minute 3: AAPL has 3 (1, 2, 3): rank 2 -> 2.0. The score of minute 10 never counts before.
    assert cal.scale("AAPL", ARIMA, 3 * minute) == 2.0
    # MSFT has 1 of its own: every symbol's last 4 up to minute 2 (AAPL 1, 2; MSFT 0.5) = 3 -> rank 2: 1.0.
    assert cal.scale("MSFT", ARIMA, 2 * minute) == 1.0
    assert cal.scale("MSFT", LINEAR, 2 * minute) is None       # 1 linear score in all: too few
    assert Calibration(config(calibration_scores=0)).scale("AAPL", ARIMA, 5 * minute) is None


def test_a_backtest_records_scores_as_the_bars_come_and_fit_at_applies_the_factor():
    minute = 60_000
    closes = list(random_walk(3, 60))
    starts = [i * minute for i in range(60)]
    c = config(history_bars=20, min_bars=20, horizon_bars=3, max_p=0, max_q=0, calibration_min_scores=5)
    cal = Calibration(c)
    plain = fit_at(starts, closes, 19, c)
    assert plain.scales == (1.0, 1.0)
    cal.record("X", starts, closes, plain)
    # Each model scored its 3 targets (bars 20-22) against the closes there.
    expected = sorted(interval_score(f.point[h], f.lower[h], f.upper[h], closes[20 + h])
                      for f in plain.forecasts if f.model == ARIMA for h in range(3))
    assert sorted(score for _, score in cal._by_key[("X", ARIMA)]) == pytest.approx(expected)
    assert cal.scale("X", ARIMA, 21 * minute) is None          # 2 scores by minute 21: too few
    cal.record("X", starts, closes, fit_at(starts, closes, 22, c))
    factor = cal.scale("X", ARIMA, 25 * minute)                # 6 scores: rank ceil(7 * .95) = 7 > 6
    assert factor is None
    wide = fit_at(starts, closes, 25, c, scales={ARIMA: 2.0, LINEAR: None})
    narrow = fit_at(starts, closes, 25, c)
    assert wide.scales == (2.0, 1.0)
    a_wide, a_narrow = wide.forecasts[0], narrow.forecasts[0]
    assert a_wide.point == a_narrow.point
    assert [u - lo for u, lo in zip(a_wide.upper, a_wide.lower, strict=True)] == pytest.approx(
        [2 * (u - lo) for u, lo in zip(a_narrow.upper, a_narrow.lower, strict=True)])
    assert wide.forecasts[1] == narrow.forecasts[1]
