"""Out-of-order and late trades: a share of trades is held back for a random delay of event time and
emitted after the trades that followed it, exercising watermarks and late-data handling."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class DisorderOptions:
    late_fraction: float = 0.0
    max_delay_ms: int = 5000

    @property
    def enabled(self) -> bool:
        return self.late_fraction > 0 and self.max_delay_ms > 0


class DelayPlan:
    """Per symbol: returns the hold-back delay in ms for a trade, or 0 (own random stream)."""

    def __init__(self, options: DisorderOptions, rng: random.Random):
        self.options = options
        self._rng = rng

    def decide(self) -> int:
        rng = self._rng
        if rng.random() < self.options.late_fraction:
            return rng.randint(1, self.options.max_delay_ms)
        return 0
