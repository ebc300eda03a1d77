"""Trade sizes: lognormal around a median, in whole shares (at least 1)."""

from __future__ import annotations

import math
import random


class LognormalSizes:
    def __init__(self, median: float, sigma: float, rng: random.Random):
        self.mu = math.log(median)
        self.sigma = sigma
        self._rng = rng

    def draw(self) -> int:
        return max(1, int(self._rng.lognormvariate(self.mu, self.sigma) + 0.5))
