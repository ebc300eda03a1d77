"""Injected anomalies: one trade at a price far from the model (spike up or crash down), or a trade many
times its usual size. The price model is not touched, so the next trade is back at the model price."""

from __future__ import annotations

import random
from dataclasses import dataclass

KINDS = ("price_spike", "price_crash", "volume_spike")


@dataclass(frozen=True)
class AnomalyOptions:
    rate: float = 0.0  # probability that a trade is anomalous
    every: int = 0  # or: every N-th trade of each symbol (per symbol, so shards agree)
    kinds: tuple[str, ...] = KINDS
    price_move: tuple[float, float] = (0.05, 0.50)  # relative size of a price anomaly, min..max
    # Times the symbol's median size. Sizes are lognormal with sigma 1 (ln units), so 10-50x is a 2.3-3.9
    # sigma trade that ordinary flow makes every few hundred trades; 300x and more (z >= 5.7) stands outside
    # that tail, where volume_zscore's threshold of 5 can tell it from the flow (bench/detection.py).
    volume_factor: tuple[float, float] = (300.0, 1000.0)

    @property
    def enabled(self) -> bool:
        return (self.rate > 0 or self.every > 0) and bool(self.kinds)


@dataclass(frozen=True)
class Anomaly:
    kind: str
    magnitude: float  # relative price move (signed) or size factor


class AnomalyPlan:
    """Decides, per trade of one symbol, whether and how it is anomalous (own random stream)."""

    def __init__(self, options: AnomalyOptions, rng: random.Random):
        self.options = options
        self._rng = rng

    def decide(self, seq: int) -> Anomaly | None:
        opts = self.options
        rng = self._rng
        if opts.every:
            hit = seq % opts.every == 0
        else:
            hit = rng.random() < opts.rate
        if not hit:
            return None
        kind = opts.kinds[rng.randrange(len(opts.kinds))]
        if kind == "volume_spike":
            return Anomaly(kind, round(rng.uniform(*opts.volume_factor), 2))
        move = round(rng.uniform(*opts.price_move), 4)
        return Anomaly(kind, move if kind == "price_spike" else -move)
