"""What the generator injects into the stream, and the ground truth it publishes about it.

- Anomalies: one trade at a price far from the model (spike up or crash down), or a trade many times its
  usual size. The price model is not touched, so the next trade is back at the model price.
- Volume surges with a flat price (`volume_surge_flat`, SurgePlan): an episode of `seconds` (60) of event time
  in which every trade of the symbol is `factor` times its drawn size and on one side (all BUY or all
  SELL), while the price stays on the model's path. No single trade is extreme (a factor of 3-5 is 1.1-1.6
  sigma of ln(size)) and the price does not move, so the trade rules should mostly miss it; the window
  that holds it has a high volume and a one-sided imbalance together (marketpulse.analytics.multivariate).
  Why the price is not frozen: the model moves on underneath, and the way back to it at the end of the
  episode would be a jump that price_zscore reports. Episodes start at `rate` per symbol-hour of event time
  (Poisson, own random stream), so how often they come does not depend on the trade rate.
- Disorder: a share of trades is held back for a random delay of event time and emitted after the trades
  that followed it, exercising watermarks and late-data handling.
- Bad records: malformed trade messages, each one failing marketpulse.trade.parse_trade. Every bad payload
  contains the trade id of the slot it replaces (symbol, run token and sequence number), so no two are
  byte-identical: the dead-letter table is keyed by a hash of the payload.
- Labels: the ground truth records for the `trades.injected` topic (key = symbol, value = one JSON object).
  Every label has the same leading fields
      {"kind": ..., "trade_id": ..., "symbol": ..., "event_time": <epoch ms of the trade>, "magnitude": ...}
  followed by kind-specific fields:
      price_spike / price_crash  magnitude = relative move (0.12 = +12 %), model_price, price
      volume_spike               magnitude = size / model size, model_size, size
      volume_surge_flat          magnitude = the episode's size factor, episode (trade id of its first trade),
                                 side, model_size (the drawn size), size; one label per trade of the episode
      late                       magnitude = delay_ms, delay_ms (how long the trade was held back, event time)
      bad                        magnitude = null, bad_kind, reason (parse_trade's message), payload_sha1
                                 (hex SHA-1 of the exact message value: the dead-letter table's key)

Each plan draws from its own random stream (model.derived_rng), so the options stay independent.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

# --- anomalies ---

ANOMALY_KINDS = ("price_spike", "price_crash", "volume_spike")


@dataclass(frozen=True)
class AnomalyOptions:
    rate: float = 0.0  # probability that a trade is anomalous
    every: int = 0  # or: every N-th trade of each symbol (per symbol, so shards agree)
    kinds: tuple[str, ...] = ANOMALY_KINDS
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


# --- volume surges with a flat price (episodes) ---

SURGE_KIND = "volume_surge_flat"


@dataclass(frozen=True)
class SurgeOptions:
    rate: float = 0.0  # episodes per symbol-hour of event time
    # Event-time length of an episode: a whole window's worth, so that one 60 s window holds at least half.
    seconds: float = 60.0
    # Times the drawn size: ln(3)..ln(5) = 1.1..1.6 sigma of ln(size), below volume_zscore's 5 even on a large
    # draw most of the time, while a third of a 60 s window at 3-5x roughly doubles the window's volume.
    factor: tuple[float, float] = (3.0, 5.0)

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.seconds > 0


@dataclass(frozen=True)
class Surge:
    episode: str  # trade id of the first trade
    end: float  # event-time offset where it ends (exclusive)
    factor: float
    side: str


class SurgePlan:
    """Per symbol: when volume surges start and end, in event-time offsets (own random stream)."""

    def __init__(self, options: SurgeOptions, rng: random.Random):
        self.options = options
        self._rng = rng
        self._next = rng.expovariate(options.rate / 3600.0)
        self.current: Surge | None = None

    def at(self, offset: float, trade_id: str) -> Surge | None:
        """The episode the trade at this offset belongs to, if any (starting one when it is due)."""
        current = self.current
        if current is not None and offset >= current.end:
            current = self.current = None
        if current is None and offset >= self._next:
            rng, opts = self._rng, self.options
            factor = round(rng.uniform(*opts.factor), 2)
            side = "BUY" if rng.random() < 0.5 else "SELL"
            current = self.current = Surge(trade_id, offset + opts.seconds, factor, side)
            self._next = current.end + rng.expovariate(opts.rate / 3600.0)
        return current


# --- disorder (late trades) ---

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


# --- bad records ---

BAD_KINDS = ("malformed_json", "missing_field", "negative_price", "invalid_symbol", "bad_side")
_DROPPABLE = ("symbol", "price", "size", "side", "event_time")


@dataclass(frozen=True)
class BadOptions:
    fraction: float = 0.0
    kinds: tuple[str, ...] = BAD_KINDS

    @property
    def enabled(self) -> bool:
        return self.fraction > 0 and bool(self.kinds)


def _dumps(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"))


def make_bad(kind: str, trade: dict, rng: random.Random) -> bytes:
    """A bad payload built from a good trade dict (trade_id first, so every variant keeps it)."""
    if kind == "malformed_json":
        text = _dumps(trade)
        # Cut somewhere after the trade id, so the id (and uniqueness) survives the truncation.
        start = text.index(",", text.index("trade_id")) + 1
        return text[: rng.randint(start, len(text) - 1)].encode()
    record = dict(trade)
    if kind == "missing_field":
        del record[_DROPPABLE[rng.randrange(len(_DROPPABLE))]]
    elif kind == "negative_price":
        record["price"] = -record["price"]
    elif kind == "invalid_symbol":
        record["symbol"] = record["symbol"].lower() + "$"
    elif kind == "bad_side":
        record["side"] = "HOLD"
    else:
        raise ValueError(f"unknown bad-record kind {kind!r}")
    return _dumps(record).encode()


# --- labels (ground truth) ---

def label(kind: str, trade_id: str, symbol: str, event_time: int, magnitude, **details) -> bytes:
    return _dumps({"kind": kind, "trade_id": trade_id, "symbol": symbol, "event_time": event_time,
                   "magnitude": magnitude, **details}).encode()
