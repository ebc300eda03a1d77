"""Geometric Brownian motion in event time, one instance per symbol.

    log S(t+dt) = log S(t) + (mu - sigma^2 / 2) dt + sigma sqrt(dt) Z,   Z ~ N(0, 1)

mu and sigma are annualised; time is measured in trading years (252 days of 6.5 hours), so a realistic annual
volatility gives realistic intraday moves. Prices are quoted rounded to the tick size; the model keeps the
exact value so rounding never accumulates.
"""

from __future__ import annotations

import math
import random

TRADING_SECONDS_PER_YEAR = 252 * 6.5 * 3600
TICK = 0.01


class GbmPriceModel:
    def __init__(self, start_price: float, drift: float, volatility: float, rng: random.Random,
                 tick: float = TICK):
        if start_price <= 0:
            raise ValueError(f"start price must be positive: {start_price}")
        if volatility < 0:
            raise ValueError(f"volatility must be >= 0: {volatility}")
        self.drift = drift
        self.volatility = volatility
        self.tick = tick
        self.log_price = math.log(start_price)
        self._rng = rng

    @property
    def price(self) -> float:
        """The exact (unrounded) model price."""
        return math.exp(self.log_price)

    def advance(self, dt_seconds: float) -> float:
        """Moves the price forward by dt seconds of event time; returns the exact new price."""
        dt = dt_seconds / TRADING_SECONDS_PER_YEAR
        sigma = self.volatility
        self.log_price += (self.drift - 0.5 * sigma * sigma) * dt + sigma * math.sqrt(dt) * self._rng.gauss()
        return math.exp(self.log_price)

    def quote(self, price: float | None = None) -> float:
        """A price rounded to the tick, never below one tick (a trade price is always positive)."""
        value = self.price if price is None else price
        ticks = max(1, round(value / self.tick))
        return round(ticks * self.tick, 2)

    def log_return_moments(self, dt_seconds: float) -> tuple[float, float]:
        """Expected mean and standard deviation of one log return over dt seconds (used by the tests)."""
        dt = dt_seconds / TRADING_SECONDS_PER_YEAR
        return (self.drift - 0.5 * self.volatility**2) * dt, self.volatility * math.sqrt(dt)
