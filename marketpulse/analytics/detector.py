"""Per-symbol anomaly detector: a plain object whose whole state is a small picklable tuple.

The DataStream job keeps one detector state per symbol (keyed ValueState) and, for each trade in event-time
order, calls

    detector = AnomalyDetector.from_state(config, state.value())
    anomalies = detector.push(trade)        # [Anomaly(trade_id, rule, symbol, ...), ...]
    state.update(detector.to_state())

Rules, tuned by the [detector] section of conf/pipeline.toml (`DetectorConfig.from_settings`):

    price_zscore   r = ln(p / p_ref) over the gap dt = t - t_ref (event time); z = r / spread with
                   spread = max(sigma * sqrt(dt), floor): sigma^2 = sum(r_i^2) / sum(dt_i), the realized
                   variance per second of the last `lookback` accepted returns (the current one is not part
                   of its own baseline), and floor = min_stddev_ticks * tick_size / p_ref, the return of that
                   many price ticks. Fires if |z| > z_threshold.
                   Why per second: a trade's return spreads with the time since the last one, and gaps vary
                   (Poisson arrivals: a 400 ms gap after forty of 40 ms); a per-trade stddev flags ordinary
                   moves after long gaps. Why the floor: prices move on a grid (cents), and at tens of trades
                   per second most trade-to-trade returns are 0 or one tick, so the spread of a short gap
                   falls below one tick and would flag every 2-tick move (the older absolute gate, stddev >
                   1e-4, instead never let the rule fire at all). With both, a move of a few ticks stays
                   quiet at any trade rate and a 5 % move is z of several hundred. z is measured from 0,
                   not from the baseline's mean return: the drift over a gap between trades is negligible.
                   The anomaly row's `stddev` is the spread used and its `mean` is empty.
                   The Flink SQL job computes this rule too, from the same settings (sql/anomalies.sql,
                   engine 'sql'); what SQL cannot state without recursion, and so differs, is listed there.
    price_jump     |p / p_ref - 1| * 100 >= price_jump_pct; z_score holds the signed % move.
    volume_zscore  z of ln(size) against the last `lookback` ln(size) values; fires if z > volume_z_threshold
                   (spikes only: a small trade is not news) and stddev > volume_min_stddev (sizes that never
                   vary have no scale to measure a spike against).

Means and standard deviations are population ones (ddof 0). No rule fires until the baseline holds `warmup`
returns; a spike during warm-up is therefore learnt as normal, the price of a cold start (`warmup` trades of
the symbol: 1.5 s at 20 trades/s per symbol with the default 30).

p_ref is the price of the last trade that did NOT break a price rule, and a return that breaks one never
enters the baseline. That is how an injected spike is reported once: for +20% on one trade followed by a
return to the old level, the spike's return is kept out of the baseline and the next trade is measured
against the pre-spike price, so the way back is an ordinary small move instead of a second, -17% anomaly.
The opposite case, a real jump to a new level that lasts, is told apart by also measuring a trade that
follows a flagged one against the flagged price: if it is ordinary from there, the flagged trade started
a new level, p_ref moves to it and the jump is reported once, on its first trade, instead of on every
trade that follows.

Volume has no such reference (sizes are not differenced), so a size that fires enters its baseline clipped to
mean + volume_z_threshold * stddev: one spike moves the baseline by a bounded amount, and a lasting change in
trade sizes is still learnt within about `lookback` trades instead of being flagged forever.

Means and variances over the ring buffers are updated in O(1) per trade with Welford's add/remove, and
recomputed exactly from the buffer once per `lookback` updates so that rounding cannot accumulate.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from marketpulse.trade import Trade

PRICE_ZSCORE = "price_zscore"
PRICE_JUMP = "price_jump"
VOLUME_ZSCORE = "volume_zscore"
RULES = (PRICE_ZSCORE, PRICE_JUMP, VOLUME_ZSCORE)
# What a person reads for each rule (alert titles, the dashboard's alert strip).
RULE_LABELS = {PRICE_ZSCORE: "price move", PRICE_JUMP: "price jump", VOLUME_ZSCORE: "volume spike"}

# 2: the price baseline is squared returns and their gaps (realized variance); 1 kept returns only, and is
# read with its price baseline dropped (from_state).
STATE_VERSION = 2


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    lookback: int
    warmup: int
    z_threshold: float
    price_jump_pct: float
    volume_z_threshold: float
    volume_min_stddev: float = 1e-4
    tick_size: float = 0.01  # the price grid of the market (the generator quotes cents)
    min_stddev_ticks: float = 1.0  # price_zscore's floor under the return stddev, in ticks (0: none)

    def __post_init__(self) -> None:
        if self.lookback < 2:
            raise ValueError(f"detector lookback must be at least 2, got {self.lookback}")
        # A baseline of fewer than 2 returns has no spread; more than `lookback` can never be reached.
        if not 2 <= self.warmup <= self.lookback:
            raise ValueError(f"detector warmup must be in [2, lookback={self.lookback}], got {self.warmup}")
        for name in ("z_threshold", "price_jump_pct", "volume_z_threshold"):
            if not getattr(self, name) > 0:
                raise ValueError(f"detector {name} must be positive, got {getattr(self, name)}")
        for name in ("volume_min_stddev", "min_stddev_ticks"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"detector {name} must not be negative, got {getattr(self, name)}")
        if not self.tick_size > 0:
            raise ValueError(f"detector tick_size must be positive, got {self.tick_size}")

    @classmethod
    def from_settings(cls, settings) -> DetectorConfig:
        """From `load_settings()`; state_ttl_minutes in that section is the job's state TTL, not a rule."""
        section = settings.detector
        return cls(
            lookback=int(section.lookback),
            warmup=int(section.warmup),
            z_threshold=float(section.z_threshold),
            price_jump_pct=float(section.price_jump_pct),
            volume_z_threshold=float(section.volume_z_threshold),
            volume_min_stddev=float(section.volume_min_stddev),
            tick_size=float(section.tick_size),
            min_stddev_ticks=float(section.min_stddev_ticks),
        )


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One row of `anomalies`, without detected_at (the job stamps it); event_time is epoch ms."""

    trade_id: str
    rule: str
    symbol: str
    event_time: int
    price: float
    size: int
    z_score: float | None
    mean: float | None
    stddev: float | None

    def to_dict(self) -> dict:
        return asdict(self)


class RollingStats:
    """Population mean and standard deviation of the last `capacity` values pushed."""

    __slots__ = ("capacity", "values", "mean", "m2", "updates_since_recompute")

    def __init__(self, capacity: int, values: Iterable[float] = ()) -> None:
        self.capacity = capacity
        self.values: deque[float] = deque()
        self.mean = 0.0
        self.m2 = 0.0
        self.updates_since_recompute = 0
        for value in values:
            self.push(value)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def stddev(self) -> float:
        count = len(self.values)
        return math.sqrt(max(self.m2, 0.0) / count) if count else 0.0

    def push(self, value: float) -> None:
        if len(self.values) == self.capacity:
            self._remove(self.values.popleft())
        self.values.append(value)
        count = len(self.values)
        delta = value - self.mean
        self.mean += delta / count
        self.m2 += delta * (value - self.mean)
        self.updates_since_recompute += 1
        if self.updates_since_recompute >= self.capacity:
            self.recompute()

    def _remove(self, value: float) -> None:
        remaining = len(self.values)  # value has already been popped
        if remaining == 0:
            self.mean = self.m2 = 0.0
            return
        old_mean = self.mean
        self.mean = old_mean - (value - old_mean) / remaining
        self.m2 -= (value - old_mean) * (value - self.mean)

    def recompute(self) -> None:
        """Exact two-pass mean and M2 from the buffer: wipes the rounding left by add/remove pairs."""
        count = len(self.values)
        self.mean = math.fsum(self.values) / count if count else 0.0
        self.m2 = math.fsum((value - self.mean) ** 2 for value in self.values)
        self.updates_since_recompute = 0

    def to_state(self) -> tuple:
        return (list(self.values), self.mean, self.m2, self.updates_since_recompute)

    @classmethod
    def from_state(cls, capacity: int, state: tuple | list) -> RollingStats:
        values, mean, m2, updates_since_recompute = state
        stats = cls(capacity)
        stats.values.extend(values[-capacity:])
        if len(values) > capacity:
            # The lookback was lowered since the state was written: keep the newest values, recount.
            stats.recompute()
        else:
            stats.mean, stats.m2 = mean, m2
            stats.updates_since_recompute = updates_since_recompute
        return stats


class AnomalyDetector:
    """The detector of ONE symbol; push its trades in arrival order (the sequence defines the returns)."""

    __slots__ = ("config", "reference", "flagged", "squared_returns", "gaps", "log_sizes")

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        # (price, event time) of the last trade that broke no price rule: what the next return is measured
        # against.
        self.reference: tuple[float, int] | None = None
        # (price, event time) of the previous trade if it broke a price rule, to recognise a lasting jump.
        self.flagged: tuple[float, int] | None = None
        # The price baseline: r^2 and the gap in seconds of each accepted return, so that their sums give the
        # realized variance per second.
        self.squared_returns = RollingStats(config.lookback)
        self.gaps = RollingStats(config.lookback)
        self.log_sizes = RollingStats(config.lookback)

    @property
    def is_warmed_up(self) -> bool:
        return len(self.squared_returns) >= self.config.warmup

    @property
    def reference_price(self) -> float | None:
        return None if self.reference is None else self.reference[0]

    def push(self, trade: Trade) -> list[Anomaly]:
        """Scores one trade against the state so far, then learns it; the rules it broke, in RULES order."""
        log_size = math.log(trade.size)
        here = (trade.price, trade.event_time)
        if self.reference is None:
            self.reference = here
            self.log_sizes.push(log_size)
            return []
        if not self.is_warmed_up:
            self._learn(here, self.reference, math.log(here[0] / self.reference[0]))
            self.log_sizes.push(log_size)
            return []

        log_return, findings = self._price_findings(here, self.reference)
        base = self.reference
        if findings and self.flagged is not None:
            return_from_flagged, findings_from_flagged = self._price_findings(here, self.flagged)
            if not findings_from_flagged:
                # The flagged previous trade was the first at a new level, not a one-trade spike.
                log_return, findings, base = return_from_flagged, [], self.flagged
        if findings:
            self.flagged = here
        else:
            self._learn(here, base, log_return)
            self.flagged = None

        findings.extend(self._volume_findings(log_size))
        return [
            Anomaly(
                trade_id=trade.trade_id,
                rule=rule,
                symbol=trade.symbol,
                event_time=trade.event_time,
                price=trade.price,
                size=trade.size,
                z_score=statistic,
                mean=mean,
                stddev=stddev,
            )
            for rule, statistic, mean, stddev in findings
        ]

    def _learn(self, here: tuple[float, int], base: tuple[float, int], log_return: float) -> None:
        """Accepts the return from base to here into the price baseline; here becomes the reference."""
        self.squared_returns.push(log_return**2)
        self.gaps.push(_gap_seconds(here, base))
        self.reference = here

    def spread(self, gap_seconds: float, base_price: float) -> float:
        """The standard deviation expected of a return over gap_seconds from base_price (module docstring)."""
        config = self.config
        floor = config.min_stddev_ticks * config.tick_size / base_price
        mean_gap = self.gaps.mean
        if mean_gap > 0:
            spread = math.sqrt(max(self.squared_returns.mean, 0.0) / mean_gap * gap_seconds)
        else:  # every baseline trade at the same instant (a replay without times): per trade
            spread = math.sqrt(max(self.squared_returns.mean, 0.0))
        return max(spread, floor)

    def _price_findings(self, here: tuple[float, int], base: tuple[float, int]) -> tuple[float, list[tuple]]:
        """The log return from base to here and the price rules it breaks, as (rule, statistic, mean,
        stddev)."""
        config = self.config
        price, base_price = here[0], base[0]
        log_return = math.log(price / base_price)
        findings = []
        spread = self.spread(_gap_seconds(here, base), base_price)
        if spread > 0:
            z_score = log_return / spread
            if abs(z_score) > config.z_threshold:
                findings.append((PRICE_ZSCORE, z_score, None, spread))
        move_pct = (price / base_price - 1.0) * 100.0
        if abs(move_pct) >= config.price_jump_pct:
            findings.append((PRICE_JUMP, move_pct, None, None))
        return log_return, findings

    def _volume_findings(self, log_size: float) -> list[tuple]:
        """Scores, then learns ln(size); a spike is learnt clipped to the threshold (see module docstring)."""
        config = self.config
        mean, stddev = self.log_sizes.mean, self.log_sizes.stddev
        if stddev > config.volume_min_stddev:
            z_score = (log_size - mean) / stddev
            if z_score > config.volume_z_threshold:
                self.log_sizes.push(mean + config.volume_z_threshold * stddev)
                return [(VOLUME_ZSCORE, z_score, mean, stddev)]
        self.log_sizes.push(log_size)
        return []

    def to_state(self) -> tuple:
        """Plain tuples, lists, floats and None: fits ValueState with Types.PICKLED_BYTE_ARRAY()."""
        return (
            STATE_VERSION,
            self.reference,
            self.flagged,
            self.squared_returns.to_state(),
            self.gaps.to_state(),
            self.log_sizes.to_state(),
        )

    @classmethod
    def from_state(cls, config: DetectorConfig, state: tuple | list | None) -> AnomalyDetector:
        """A detector from `to_state()`'s value, or a fresh one for None (first trade, expired TTL)."""
        detector = cls(config)
        if state is None:
            return detector
        version = state[0]
        if version == 1:
            # (1, reference_price, flagged_price, returns, log_sizes): returns without their gaps cannot give
            # a variance per second, so the price baseline warms up again; the sizes carry over.
            detector.log_sizes = RollingStats.from_state(config.lookback, state[4])
            return detector
        if version != STATE_VERSION:
            raise ValueError(f"detector state version {version} is not {STATE_VERSION}")
        _, reference, flagged, squared_returns, gaps, log_sizes = state
        detector.reference = None if reference is None else tuple(reference)
        detector.flagged = None if flagged is None else tuple(flagged)
        detector.squared_returns = RollingStats.from_state(config.lookback, squared_returns)
        detector.gaps = RollingStats.from_state(config.lookback, gaps)
        detector.log_sizes = RollingStats.from_state(config.lookback, log_sizes)
        return detector


def _gap_seconds(here: tuple[float, int], base: tuple[float, int]) -> float:
    """Event-time seconds between base and here, either way: a trade that arrives after a later-stamped one
    is as far from it in time, and its price had as long to move."""
    return abs(here[1] - base[1]) / 1000.0
