"""GbmPriceModel: statistics of a long series against the model's parameters, tick rounding, sizes."""

import math
import random
import statistics

import pytest

from generator.model import TRADING_SECONDS_PER_YEAR, GbmPriceModel, LognormalSizes


def _log_returns(model: GbmPriceModel, dt: float, n: int) -> list[float]:
    returns = []
    previous = model.log_price
    for _ in range(n):
        model.advance(dt)
        returns.append(model.log_price - previous)
        previous = model.log_price
    return returns


@pytest.mark.parametrize("drift, vol, dt", [(0.05, 0.25, 1.0), (0.30, 0.60, 3600.0), (-0.2, 0.16, 60.0)])
def test_log_returns_have_the_model_mean_and_volatility(drift, vol, dt):
    n = 100_000
    model = GbmPriceModel(100.0, drift, vol, random.Random(1234))
    returns = _log_returns(model, dt, n)
    expected_mean, expected_sd = model.log_return_moments(dt)
    assert expected_sd == pytest.approx(vol * math.sqrt(dt / TRADING_SECONDS_PER_YEAR))
    assert expected_mean == pytest.approx((drift - vol**2 / 2) * dt / TRADING_SECONDS_PER_YEAR)
    # Tolerances: 4 standard errors (mean: sd/sqrt(n); sample sd of a normal: sd/sqrt(2n)).
    assert abs(statistics.fmean(returns) - expected_mean) < 4 * expected_sd / math.sqrt(n)
    assert abs(statistics.stdev(returns) - expected_sd) < 4 * expected_sd / math.sqrt(2 * n)


def test_annualised_volatility_is_recovered_from_event_time_returns():
    # 20 trades/s for ~14 trading hours: the estimate of sigma must be within 4 standard errors.
    n, dt = 400_000, 0.05
    model = GbmPriceModel(230.0, 0.05, 0.25, random.Random(7))
    returns = _log_returns(model, dt, n)
    sigma_hat = statistics.stdev(returns) / math.sqrt(dt / TRADING_SECONDS_PER_YEAR)
    assert abs(sigma_hat - 0.25) < 4 * 0.25 / math.sqrt(2 * n)


def test_zero_volatility_is_pure_drift():
    model = GbmPriceModel(100.0, 0.10, 0.0, random.Random(1))
    model.advance(TRADING_SECONDS_PER_YEAR)
    assert model.price == pytest.approx(100.0 * math.exp(0.10))


def test_same_rng_seed_gives_the_same_path_and_other_seeds_differ():
    paths = []
    for seed in (5, 5, 6):
        model = GbmPriceModel(50.0, 0.05, 0.4, random.Random(seed))
        paths.append([model.advance(1.0) for _ in range(100)])
    assert paths[0] == paths[1]
    assert paths[0] != paths[2]


def test_quote_rounds_to_the_tick_and_never_below_one_tick():
    model = GbmPriceModel(100.0, 0.0, 0.2, random.Random(1))
    assert model.quote(230.004999) == 230.0
    assert model.quote(230.005001) == 230.01
    assert model.quote(0.001) == 0.01
    assert model.quote(0.0) == 0.01
    for _ in range(1000):
        price = model.quote(model.advance(600.0))
        assert price == round(price, 2) and price > 0
        assert abs(price - model.price) <= 0.005 + 1e-9


@pytest.mark.parametrize("start, vol", [(0.0, 0.2), (-1.0, 0.2), (10.0, -0.1)])
def test_invalid_parameters_are_refused(start, vol):
    with pytest.raises(ValueError):
        GbmPriceModel(start, 0.0, vol, random.Random(1))


def test_sizes_are_lognormal_whole_shares_around_the_median():
    n = 100_000
    sizes = LognormalSizes(100, 1.0, random.Random(3))
    draws = [sizes.draw() for _ in range(n)]
    assert all(isinstance(s, int) and s >= 1 for s in draws)
    # Median of a lognormal is exp(mu) = 100; the sample median's standard error is ~1.25 * 100 / sqrt(n)
    # in log space for sigma=1 -> use the log of the sample median.
    assert abs(math.log(statistics.median(draws)) - math.log(100)) < 4 * 1.2533 / math.sqrt(n)


def test_size_log_moments_match_when_rounding_is_negligible():
    n = 100_000
    sizes = LognormalSizes(10_000, 0.5, random.Random(4))
    logs = [math.log(sizes.draw()) for _ in range(n)]
    assert abs(statistics.fmean(logs) - math.log(10_000)) < 4 * 0.5 / math.sqrt(n)
    assert abs(statistics.stdev(logs) - 0.5) < 4 * 0.5 / math.sqrt(2 * n)
