"""From parsed command-line options to a run plan: which records, in which order, at what pace, until when.

Pure apart from reading the wall clock in wall-clock mode (`now_ms`, injectable for tests); cli.py parses the
arguments, run.execute() carries the plan out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from marketpulse.times import parse_timestamp

from .injections import AnomalyOptions, BadOptions, DisorderOptions, SurgeOptions
from .model import SymbolSpec, build_universe, check_ticker, run_token, synthetic_tickers
from .reference import reference_message
from .replay import replay_events
from .stream import Event, StreamOptions, Topics, generate, owned_symbols, shard_from_env

# Event time of a seeded run when --start-time is not given: a fixed instant (a market open), so the run is
# reproducible.
DEFAULT_SIM_START = "2025-01-02T14:30:00Z"


class UsageError(ValueError):
    """A bad option value: reported in one line, exit code 2."""


@dataclass
class RunPlan:
    reference: list[tuple[str, bytes, bytes]]  # reference messages sent before the first event
    events: Iterator[Event]
    speed: float | None  # pacing: event-time seconds per wall second; None = as fast as possible
    wall_duration_s: float | None  # stop after this much wall time (unpaced wall-clock runs)
    topics: Topics
    owned: list[SymbolSpec] = field(default_factory=list)  # this shard's symbols (none for a replay)
    # Wall-clock runs: the epoch ms of offset 0, so the pacer sends each trade at its own event time.
    wall_start_ms: int | None = None
    # --history-minutes: the offset where the history ends and the live part starts (None: no history).
    # Offset 0 is wall_start_ms, the history's first instant, so the pacer finds every history event
    # overdue (sent as fast as the sink takes it) and waits for every live one: one stream, one clock.
    live_from_s: float | None = None


def resolve(args, settings, environ=os.environ, now_ms: Callable[[], int] | None = None) -> RunPlan:
    """Options -> run plan. Raises UsageError (or ValueError from a bad ticker) on inconsistent options."""
    topics = Topics(args.topic, args.injected_topic, args.reference_topic)
    shard = args.shard or shard_from_env(environ) or (0, 1)
    seed = settings.generator.seed if args.seed is None else args.seed

    history_s = args.history_minutes * 60
    if args.replay:
        if history_s:
            raise UsageError("--history-minutes needs the price model, not --replay")
        if not os.path.isfile(args.replay):
            raise UsageError(f"replay file not found: {args.replay}")
        return RunPlan([], replay_events(args.replay, seed, topics, shard), args.speed or None, None, topics)

    tickers = synthetic_tickers(args.universe) if args.universe else \
        [check_ticker(t.strip()) for t in args.symbols.split(",") if t.strip()]
    if not tickers:
        raise UsageError("no symbols given")
    universe = build_universe(tickers, seed)

    clock = args.clock
    if history_s:
        if clock == "sim" or args.start_time is not None or args.event_rate is not None:
            raise UsageError("--history-minutes ends the history at the wall clock's now: it does not go "
                             "with --clock sim, --start-time or --event-rate (use --history-rate)")
        if args.rate <= 0:
            raise UsageError("--history-minutes needs a live --rate above 0 (the live part is paced on the "
                             "wall clock)")
        if args.history_rate <= 0:
            raise UsageError("--history-rate must be above 0")
    elif clock == "auto":
        clock = "sim" if (args.seed is not None or args.start_time is not None) else "wall"
    wall_start_ms = None
    if history_s:
        # Offset 0 is `history_s` before now: history event times run up to now, live ones from now on.
        start_ms = wall_start_ms = (now_ms() if now_ms else int(time.time() * 1000)) - round(history_s * 1000)
        event_rate = args.rate
    elif clock == "wall":
        if args.start_time is not None:
            raise UsageError("--start-time needs the simulated clock (drop --clock wall)")
        if args.event_rate is not None:
            raise UsageError("--event-rate applies to the simulated clock only")
        start_ms = wall_start_ms = now_ms() if now_ms else int(time.time() * 1000)
        event_rate = args.rate or float(settings.generator.rate)
    else:
        start_ms = args.start_time if args.start_time is not None else parse_timestamp(DEFAULT_SIM_START)
        event_rate = args.event_rate or args.rate or float(settings.generator.rate)
    if event_rate <= 0:
        raise UsageError("the event rate must be positive")

    unpaced_wall = clock == "wall" and args.rate == 0 and not history_s
    opts = StreamOptions(
        universe=universe, seed=seed, start_ms=start_ms, event_rate=event_rate,
        run=run_token(seed, start_ms), shard=shard,
        # With a history, --duration is the live part's.
        end_offset_s=None if (args.duration is None or unpaced_wall) else history_s + args.duration,
        vol_scale=args.vol_scale,
        anomalies=AnomalyOptions(
            rate=args.anomaly_rate, every=args.anomaly_every or 0, kinds=args.anomaly_kinds,
            price_move=(args.spike_pct[0] / 100, args.spike_pct[1] / 100), volume_factor=args.volume_factor),
        disorder=DisorderOptions(late_fraction=args.late_fraction, max_delay_ms=args.max_delay_ms),
        bad=BadOptions(fraction=args.bad_fraction, kinds=args.bad_kinds),
        surges=SurgeOptions(rate=args.surge_rate, seconds=args.surge_seconds, factor=args.surge_factor),
        topics=topics,
        # As fast as possible on the wall clock: stamp each trade with the time it is made.
        event_time_of=(lambda _offset: int(time.time() * 1000)) if unpaced_wall else None,
        history_s=history_s, history_rate=args.history_rate if history_s else 0.0,
    )
    owned = [spec for _, spec in owned_symbols(opts)]
    reference = [] if args.no_reference else \
        [(topics.reference, *reference_message(spec)) for spec in owned]
    return RunPlan(
        reference=reference, events=generate(opts),
        speed=args.rate / event_rate if args.rate > 0 else None,
        wall_duration_s=args.duration if unpaced_wall else None,
        topics=topics, owned=owned, wall_start_ms=wall_start_ms, live_from_s=history_s or None)
