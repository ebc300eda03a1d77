"""The synthetic market as a pure stream of events: no clock, no I/O.

Each symbol is an independent Poisson process of trades (rate = event rate x the symbol's weight share)
driven only by random streams seeded from (seed, symbol), so the single-instance stream is the merge of the
per-symbol streams and a shard is the merge of its own symbols' streams: n shards split the stream exactly.

An event is one trade slot, as a tuple
    (offset_s, symbol_index, n, messages)
offset_s: seconds of event time since the start (when to emit it: a held-back trade is emitted at its
release time); n: emission counter within the symbol (breaks ties); messages: ((topic, key, value), ...)
whose first entry is the trade-topic message (a good or a bad trade) and the rest are its labels.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from marketpulse.trade import InvalidTrade, parse_trade

from .injections import (
    SURGE_KIND,
    AnomalyOptions,
    AnomalyPlan,
    BadOptions,
    DelayPlan,
    DisorderOptions,
    SurgeOptions,
    SurgePlan,
    label,
    make_bad,
)
from .model import GbmPriceModel, LognormalSizes, SymbolSpec, derived_rng

SHARD_ENV = "MARKETPULSE_GENERATOR_SHARD"
_SHARD_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
SIZE_SIGMA = 1.0  # lognormal sigma of trade sizes: most trades near 100 shares, a long tail of blocks

Event = tuple[float, int, int, tuple[tuple[str, bytes, bytes], ...]]


@dataclass(frozen=True)
class Topics:
    trades: str = "trades"
    injected: str = "trades.injected"
    reference: str = "symbols"


@dataclass(frozen=True)
class StreamOptions:
    universe: list[SymbolSpec]  # the FULL universe: shard ownership and rate shares depend on it
    seed: int
    start_ms: int  # event time of offset 0
    event_rate: float  # trades per second of event time, all symbols together (whole universe)
    run: str  # run token in every trade id
    shard: tuple[int, int] = (0, 1)
    end_offset_s: float | None = None  # stop each symbol's stream at this event-time offset
    vol_scale: float = 1.0
    anomalies: AnomalyOptions = field(default_factory=AnomalyOptions)
    disorder: DisorderOptions = field(default_factory=DisorderOptions)
    bad: BadOptions = field(default_factory=BadOptions)
    surges: SurgeOptions = field(default_factory=SurgeOptions)
    topics: Topics = field(default_factory=Topics)
    # Event time of a trade from its offset; the default is start_ms + offset. The wall-clock unpaced mode
    # passes a function that reads the clock instead.
    event_time_of: Callable[[float], int] | None = None
    # History first (--history-minutes): the first history_s seconds of event time are made at history_rate
    # trades/s, then the same per-symbol processes go on at event_rate. 0 = no history.
    history_s: float = 0.0
    history_rate: float = 0.0


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard i/n`: instance i of n owns the symbols whose index in the full universe is i modulo n."""
    match = _SHARD_PATTERN.match(text)
    if not match:
        raise ValueError(f"shard must look like i/n (e.g. 0/4), got {text!r}")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {text!r}: need n >= 1 and 0 <= i < n")
    return index, count


def shard_from_env(environ=os.environ) -> tuple[int, int] | None:
    value = environ.get(SHARD_ENV)
    return parse_shard(value) if value else None


def owns(symbol_index: int, shard: tuple[int, int]) -> bool:
    index, count = shard
    return symbol_index % count == index


def owned_symbols(opts: StreamOptions) -> list[tuple[int, SymbolSpec]]:
    return [(i, spec) for i, spec in enumerate(opts.universe) if owns(i, opts.shard)]


def symbol_events(opts: StreamOptions, index: int, spec: SymbolSpec) -> Iterator[Event]:
    """All events of one symbol, in emission order."""
    seed, sym = opts.seed, spec.symbol
    total_weight = sum(s.weight for s in opts.universe)
    lam = opts.event_rate * spec.weight / total_weight
    switch = opts.history_s
    lam_now = opts.history_rate * spec.weight / total_weight if switch > 0 else lam
    arrivals = derived_rng(seed, sym, "arrivals")
    model = GbmPriceModel(spec.start_price, spec.drift, spec.volatility * opts.vol_scale,
                          derived_rng(seed, sym, "price"))
    flow = derived_rng(seed, sym, "flow")  # size and side
    sizes = LognormalSizes(spec.median_size, SIZE_SIGMA, flow)
    anomaly_plan = AnomalyPlan(opts.anomalies, derived_rng(seed, sym, "anomalies")) \
        if opts.anomalies.enabled else None
    delay_plan = DelayPlan(opts.disorder, derived_rng(seed, sym, "disorder")) \
        if opts.disorder.enabled else None
    bad_rng = derived_rng(seed, sym, "bad") if opts.bad.enabled else None
    surge_plan = SurgePlan(opts.surges, derived_rng(seed, sym, "surges")) if opts.surges.enabled else None
    bad_fraction, bad_kinds = opts.bad.fraction, opts.bad.kinds

    trades_topic, injected_topic = opts.topics.trades, opts.topics.injected
    key = sym.encode()
    prefix = f"{sym}-{opts.run}-"
    start_ms = opts.start_ms
    event_time_of = opts.event_time_of
    end = opts.end_offset_s
    random_ = flow.random
    expovariate = arrivals.expovariate

    held: list[tuple[float, int, tuple]] = []  # (release offset, seq, messages) of held-back trades
    offset = 0.0
    seq = 0
    n = 0
    while True:
        dt = expovariate(lam_now)
        if offset < switch <= offset + dt:
            # Arrivals are memoryless, so at the switch the process just goes on at the live rate: no gap or
            # burst at "now". The price model advances over the whole interval: one continuous path.
            dt = switch - offset + expovariate(lam)
            lam_now = lam
        offset += dt
        if end is not None and offset >= end:
            break
        while held and held[0][0] <= offset:
            release, _, messages = heapq.heappop(held)
            n += 1
            yield (release, index, n, messages)
        seq += 1
        exact = model.advance(dt)
        price = model.quote(exact)
        size = sizes.draw()
        side = "BUY" if random_() < 0.5 else "SELL"
        trade_id = prefix + str(seq)
        event_time = start_ms + int(offset * 1000) if event_time_of is None else event_time_of(offset)

        # Each decision is drawn for every slot from its own stream, so the options stay independent.
        anomaly = anomaly_plan.decide(seq) if anomaly_plan else None
        delay = delay_plan.decide() if delay_plan else 0
        is_bad = bad_rng is not None and bad_rng.random() < bad_fraction

        if is_bad:
            kind = bad_kinds[bad_rng.randrange(len(bad_kinds))]
            trade = {"trade_id": trade_id, "symbol": sym, "price": price, "size": size, "side": side,
                     "event_time": event_time}
            value = make_bad(kind, trade, bad_rng)
            try:
                parse_trade(value)
                raise AssertionError(f"bad record of kind {kind} parses: {value!r}")
            except InvalidTrade as err:
                reason = str(err)
            messages = (
                (trades_topic, key, value),
                (injected_topic, key, label("bad", trade_id, sym, event_time, None, bad_kind=kind,
                                            reason=reason, payload_sha1=hashlib.sha1(value).hexdigest())),
            )
            n += 1
            yield (offset, index, n, messages)
            continue

        labels = ()
        surge = surge_plan.at(offset, trade_id) if surge_plan else None
        if surge is not None:
            # A trade of a surge is only that: a one-trade anomaly drawn for it is left out, so every label
            # of the trade tells one story (the decision was still drawn, keeping the stream aligned).
            anomaly = None
            model_size = size
            size, side = max(1, int(size * surge.factor + 0.5)), surge.side
            labels = ((injected_topic, key, label(SURGE_KIND, trade_id, sym, event_time, surge.factor,
                                                  episode=surge.episode, side=side, model_size=model_size,
                                                  size=size)),)
        if anomaly is not None:
            if anomaly.kind == "volume_spike":
                # Many times the symbol's USUAL (median) size, not this trade's random draw: a spike on top of
                # a draw from the lognormal tail would be an ordinary-looking trade half the time.
                model_size = spec.median_size
                size = max(2, int(model_size * anomaly.magnitude + 0.5))
                labels = ((injected_topic, key, label(anomaly.kind, trade_id, sym, event_time,
                                                      anomaly.magnitude, model_size=model_size, size=size)),)
            else:
                model_price = price
                price = model.quote(exact * (1.0 + anomaly.magnitude))
                labels = ((injected_topic, key, label(anomaly.kind, trade_id, sym, event_time,
                                                      anomaly.magnitude, model_price=model_price,
                                                      price=price)),)
        # Same bytes as marketpulse.trade.Trade(...).to_json(), without building the dataclass.
        value = (f'{{"trade_id":"{trade_id}","symbol":"{sym}","price":{price!r},"size":{size},'
                 f'"side":"{side}","event_time":{event_time}}}').encode()
        if delay:
            labels += ((injected_topic, key, label("late", trade_id, sym, event_time, delay,
                                                   delay_ms=delay)),)
            heapq.heappush(held, (offset + delay / 1000.0, seq, ((trades_topic, key, value), *labels)))
            continue
        n += 1
        yield (offset, index, n, ((trades_topic, key, value), *labels))

    while held:  # the stream ends: release what is still held back, in release order
        release, _, messages = heapq.heappop(held)
        n += 1
        yield (release, index, n, messages)


def generate(opts: StreamOptions) -> Iterator[Event]:
    """The merged stream of the shard's symbols, ordered by (emission offset, symbol index, n)."""
    streams = [symbol_events(opts, i, spec) for i, spec in owned_symbols(opts)]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams)
