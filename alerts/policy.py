"""The alert decisions, pure: parsing an anomalies-topic record, dedup, cooldown and the retry schedule.
No I/O here; alerts/service.py feeds it records and stores what it decides.

Each anomaly is identified by (trade_id, rule), the dedup key of the at-least-once `anomalies` topic.
For each anomaly, in topic order:

    repeat     its (trade_id, rule) was decided before (a replayed or repeated message): nothing happens,
               nothing is delivered again, its first decision stands.
    alert      no alert of the same (symbol, rule) yet, or its event time is at least `cooldown` after the
               event time of the last alert of that (symbol, rule): it goes to the channels.
    stale      its event time is more than `max_age` before the wall clock when it is decided (an alert is
               about now: the demo's hour of history, or a backlog read after a long outage): recorded as
               suppressed with the reason, not delivered, and it starts no cooldown. max_age 0 = off.
    suppress   otherwise (within the cooldown, or older than the last alert): recorded, not delivered.

The cooldown is measured in EVENT time (the trade's), never the wall clock, so a replay of the same topic,
or a restart that re-reads part of it, makes the same decisions (the stale rule alone reads the wall clock;
a decision once stored is never made again, so a replay still changes nothing). An alert starts a cooldown
whether or not its delivery succeeded (a dead webhook must not change which anomalies are alerts). With
cooldown 0 every distinct anomaly is an alert.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

ALERT = "alert"
SUPPRESS = "suppress"
STALE = "stale"
REPEAT = "repeat"

# What the DataStream job writes to the anomalies topic (jobs/market_metrics_sinks.sql, anomalies_kafka), and
# the SQL job's indicator alert rules (sql/indicators.sql, indicator_alerts_kafka: the same columns).
REQUIRED_FIELDS = ("trade_id", "rule", "symbol", "event_time")
NUMBER_FIELDS = ("price", "z_score", "mean", "stddev")
INT_FIELDS = ("size", "detected_at")


class InvalidAnomaly(ValueError):
    """A record of the anomalies topic that is not an anomaly; the message is one printable line."""


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One message of the anomalies topic; times are epoch ms, as on the topic."""

    trade_id: str
    rule: str
    symbol: str
    event_time: int
    price: float | None = None
    size: int | None = None
    z_score: float | None = None
    mean: float | None = None
    stddev: float | None = None
    detected_at: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.trade_id, self.rule)

    @property
    def idempotency_key(self) -> str:
        """What a receiver deduplicates on: the same for every delivery attempt of this anomaly."""
        return f"{self.trade_id}:{self.rule}"


def parse_anomaly(value: bytes | str | None) -> Anomaly:
    """The JSON value of an anomalies-topic record (keys as the DataStream job writes them)."""
    if value is None:
        raise InvalidAnomaly("empty record (tombstone)")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, ValueError) as err:
        raise InvalidAnomaly(f"not JSON: {str(err).splitlines()[0][:120]}") from None
    if not isinstance(data, dict):
        raise InvalidAnomaly(f"not a JSON object: {type(data).__name__}")
    fields: dict = {}
    for name in REQUIRED_FIELDS:
        raw = data.get(name)
        if raw is None or raw == "":
            raise InvalidAnomaly(f"missing {name}")
        fields[name] = raw
    for name in ("trade_id", "rule", "symbol"):
        if not isinstance(fields[name], str):
            raise InvalidAnomaly(f"{name} is not a string: {fields[name]!r:.60}")
    event_time = fields["event_time"]
    if isinstance(event_time, bool) or not isinstance(event_time, int):
        raise InvalidAnomaly(f"event_time is not epoch milliseconds: {event_time!r:.60}")
    for name in NUMBER_FIELDS:
        raw = data.get(name)
        if raw is not None:
            if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
                raise InvalidAnomaly(f"{name} is not a finite number: {raw!r:.60}")
            raw = float(raw)
        fields[name] = raw
    for name in INT_FIELDS:
        raw = data.get(name)
        if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int)):
            raise InvalidAnomaly(f"{name} is not an integer: {raw!r:.60}")
        fields[name] = raw
    return Anomaly(**fields)


@dataclass(frozen=True, slots=True)
class Anchor:
    """The last alert of a (symbol, rule): its event time starts the cooldown."""

    event_time: int
    trade_id: str


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str               # ALERT | SUPPRESS | STALE | REPEAT
    reason: str | None = None  # why, for SUPPRESS and REPEAT


class CooldownPolicy:
    """Dedup and per-(symbol, rule) cooldown. Holds the last alert of each (symbol, rule) (`anchors`,
    loaded from the stored decisions on start); whether a key was decided before is the caller's
    knowledge (the store), passed in as `already_decided`."""

    def __init__(self, cooldown_ms: int, anchors: dict[tuple[str, str], Anchor] | None = None,
                 max_age_ms: int = 0):
        if cooldown_ms < 0 or max_age_ms < 0:
            raise ValueError(f"cooldown and max age must not be negative, got {cooldown_ms} and "
                             f"{max_age_ms} ms")
        self.cooldown_ms = int(cooldown_ms)
        self.max_age_ms = int(max_age_ms)
        self.anchors: dict[tuple[str, str], Anchor] = dict(anchors or {})

    def decide(self, anomaly: Anomaly, already_decided: bool = False, now_ms: int | None = None) -> Verdict:
        """The verdict for one anomaly, in topic order; an ALERT becomes the new anchor of its
        (symbol, rule). now_ms: the wall clock, for the max age (None: no age check)."""
        if already_decided:
            return Verdict(REPEAT, "already decided (replayed or repeated message)")
        if self.max_age_ms and now_ms is not None and now_ms - anomaly.event_time > self.max_age_ms:
            return Verdict(STALE, f"stale: event time {(now_ms - anomaly.event_time) / 1000:,.0f} s before "
                                  f"it was read (max age {self.max_age_ms / 1000:g} s)")
        group = (anomaly.symbol, anomaly.rule)
        anchor = self.anchors.get(group)
        if anchor is not None and self.cooldown_ms > 0:
            if anomaly.event_time < anchor.event_time:
                return Verdict(SUPPRESS, f"older than the last alert {anchor.trade_id} "
                                         f"({(anchor.event_time - anomaly.event_time) / 1000:g} s before it)")
            elapsed = anomaly.event_time - anchor.event_time
            if elapsed < self.cooldown_ms:
                return Verdict(SUPPRESS, f"cooldown: {elapsed / 1000:g} s after alert {anchor.trade_id} "
                                         f"(cooldown {self.cooldown_ms / 1000:g} s)")
        self.anchors[group] = Anchor(anomaly.event_time, anomaly.trade_id)
        return Verdict(ALERT)


def decide_stream(anomalies: Iterable[Anomaly], cooldown_ms: int,
                  policy: CooldownPolicy | None = None,
                  decided: set[tuple[str, str]] | None = None,
                  now_ms: int | None = None) -> Iterator[tuple[Anomaly, Verdict]]:
    """The verdicts for a stream in order, with dedup in memory (`decided` is updated): what the service
    does, without the database."""
    policy = policy or CooldownPolicy(cooldown_ms)
    decided = set() if decided is None else decided
    for anomaly in anomalies:
        verdict = policy.decide(anomaly, anomaly.key in decided, now_ms)
        decided.add(anomaly.key)
        yield anomaly, verdict


def backoff_delays(retries: int, initial_ms: int, multiplier: float, max_ms: int) -> list[float]:
    """Seconds to wait before each retry: initial, initial*multiplier, ... capped at max; `retries` of them
    (so a delivery makes at most retries + 1 attempts)."""
    if retries < 0 or initial_ms < 0 or multiplier < 1 or max_ms < 0:
        raise ValueError("retries, backoff_initial_ms and backoff_max_ms must be >= 0 and "
                         "backoff_multiplier >= 1")
    return [min(initial_ms * multiplier ** i, max_ms) / 1000 for i in range(retries)]
