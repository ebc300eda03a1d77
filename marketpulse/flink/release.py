"""When a trade is late, when it is released, and what its release produces: the Flink-free core of the
per-symbol operator (marketpulse.flink.functions.TradeAnalytics), unit-tested in
tests/unit/test_job_helpers.py.

One rule decides lateness for both window sizes and the detector. With W the operator's watermark when the
trade arrives and L the allowed lateness:

    late      event_time <= W - L        -> late_trades; in no window and not seen by the detector
    on time   otherwise                  -> buffered until the watermark reaches its release time

A watermark W promises that no trade at or before W is still to come, so an on-time trade can never be
overtaken: buffered trades are released in (event_time, trade_id) order, pushed into the detector in that
order and folded into their windows. The detector therefore sees exactly the sorted stream of on-time trades,
whatever the arrival order across partitions, replays and restarts.

Release times are the ends of `interval_ms` slots of event_time + L (1 s by default): one timer per symbol per
slot instead of one per trade. A window [start, end) is emitted once, final, when the watermark reaches
end - 1 + L; with L = 0 that is the moment Flink's own event-time window would fire. Allowed lateness thus
delays a window's single result by L instead of revising it later, so every window_metrics row is final.

Restores (TaskManager crash, savepoint). Two things of the operator are NOT in a checkpoint, and the state
must not depend on them:
- its watermark: after a restore Flink starts every operator at Long.MIN_VALUE. Each symbol therefore keeps
  `released_through`, the last release time it fired, and a trade is judged against
  max(watermark, released_through) (`effective_watermark`). Without it, a replayed trade that was late before
  the crash would be accepted into a window that had already been written, and its upsert would overwrite
  the complete row with a partial one.
- its Python timers: PyFlink flushes Python state before the checkpoint barrier, but timers registered from
  Python reach the Java timer service later (queued mailbox tasks, FLINK-37084), so a checkpoint can hold a
  buffered slot whose timer is not in it. Each symbol therefore also keeps the release times it is waiting
  for, and every timer releases all slots due at or before it (`take_due`), not just its own: a slot whose
  timer was lost goes out with the symbol's next timer, in (event_time, trade_id) order like any other.
  Windows whose close timer was lost are closed the same way (`release` closes every window due by then).
"""

from __future__ import annotations

from dataclasses import dataclass

from marketpulse.analytics import Anomaly, AnomalyDetector, DetectorConfig, WindowAccumulator, WindowMetrics
from marketpulse.trade import Trade

DEFAULT_RELEASE_INTERVAL_MS = 1000

# A buffered trade: sorting these tuples sorts by (event_time, trade_id).
PendingTrade = tuple[int, str, float, int, str]  # (event_time, trade_id, price, size, side)
# The open window of each size: {size_ms: (window_start, WindowAccumulator.to_tuple())}.
OpenWindows = dict[int, tuple[int, tuple]]


@dataclass(frozen=True, slots=True)
class AnalyticsConfig:
    window_sizes_ms: tuple[int, ...]
    allowed_lateness_ms: int
    detector: DetectorConfig
    state_ttl_minutes: int
    release_interval_ms: int = DEFAULT_RELEASE_INTERVAL_MS

    def __post_init__(self) -> None:
        if not self.window_sizes_ms or len(set(self.window_sizes_ms)) != len(self.window_sizes_ms):
            raise ValueError(f"window sizes must be distinct and non-empty: {self.window_sizes_ms}")
        if self.release_interval_ms <= 0 or self.allowed_lateness_ms < 0 or self.state_ttl_minutes <= 0:
            raise ValueError("release interval and state TTL must be positive, allowed lateness not negative")
        for name, value in (("window size", self.window_sizes_ms),
                            ("allowed lateness", (self.allowed_lateness_ms,))):
            if any(size % self.release_interval_ms for size in value):
                raise ValueError(f"{name} {value} ms is not a multiple of the release interval "
                                 f"{self.release_interval_ms} ms")
        if any(size <= 0 or size % 1000 for size in self.window_sizes_ms):
            raise ValueError(f"window sizes must be whole seconds: {self.window_sizes_ms}")

    @classmethod
    def from_settings(cls, settings,
                      release_interval_ms: int = DEFAULT_RELEASE_INTERVAL_MS) -> AnalyticsConfig:
        """[windows] size_seconds and short_size_seconds (if different and positive), [detector]."""
        windows = settings.windows
        sizes = [int(windows.size_seconds)]
        short = int(getattr(windows, "short_size_seconds", 0) or 0)
        if short > 0 and short != sizes[0]:
            sizes.append(short)
        return cls(
            window_sizes_ms=tuple(size * 1000 for size in sizes),
            allowed_lateness_ms=int(windows.allowed_lateness_seconds) * 1000,
            detector=DetectorConfig.from_settings(settings),
            state_ttl_minutes=int(settings.detector.state_ttl_minutes),
            release_interval_ms=release_interval_ms,
        )


MIN_WATERMARK = -(2**63)  # Long.MIN_VALUE: no watermark yet

# Per symbol: (released_through, release times with buffered trades, ascending).
ReleaseClock = tuple[int, tuple[int, ...]]
NEW_CLOCK: ReleaseClock = (MIN_WATERMARK, ())


def effective_watermark(watermark: int, clock: ReleaseClock) -> int:
    """The watermark a symbol's trades are judged against: never behind what it has released already."""
    return max(watermark, clock[0])


def with_due(clock: ReleaseClock, due: int) -> ReleaseClock:
    """The clock with one more release time waiting (a new slot got its first trade)."""
    released_through, dues = clock
    return released_through, tuple(sorted({*dues, due}))


def take_due(clock: ReleaseClock, timer: int) -> tuple[list[int], ReleaseClock | None]:
    """The release times a timer releases (all <= timer, its own and any whose timer was lost) and the clock
    after it; None when the timer is one the symbol has released already (a duplicate after a restore)."""
    released_through, dues = clock
    if timer <= released_through:
        return [], None
    return [due for due in dues if due <= timer], (timer, tuple(due for due in dues if due > timer))


def is_late(event_time: int, watermark: int, allowed_lateness_ms: int) -> bool:
    """At or behind the watermark by more than the allowed lateness (watermark Long.MIN_VALUE: never)."""
    return event_time <= watermark - allowed_lateness_ms


def release_time(event_time: int, allowed_lateness_ms: int, interval_ms: int) -> int:
    """The timer that releases an on-time trade: the last ms of the slot holding event_time + L."""
    shifted = event_time + allowed_lateness_ms
    return shifted - shifted % interval_ms + interval_ms - 1


def window_close_time(window_end: int, allowed_lateness_ms: int) -> int:
    return window_end - 1 + allowed_lateness_ms


@dataclass(slots=True)
class Released:
    """What one timer produces for one symbol."""

    windows: list[WindowMetrics]
    anomalies: list[Anomaly]
    timers: list[int]  # window-close timers to register


def release(
    symbol: str,
    trades: list[PendingTrade],
    open_windows: OpenWindows,
    detector: AnomalyDetector,
    config: AnalyticsConfig,
    timer: int,
) -> Released:
    """Feeds the trades due at `timer` (any order) to the detector and the windows in (event_time, trade_id)
    order, then closes the windows whose close time is <= timer. Updates open_windows and detector in
    place."""
    out = Released([], [], [])
    lateness = config.allowed_lateness_ms
    accumulators: dict[int, tuple[int, WindowAccumulator]] = {
        size: (start, WindowAccumulator.from_tuple(values)) for size, (start, values) in open_windows.items()
    }
    for event_time, trade_id, price, size, side in sorted(trades):
        trade = Trade(trade_id, symbol, price, size, side, event_time)
        out.anomalies.extend(detector.push(trade))
        for window_ms in config.window_sizes_ms:
            start = event_time - event_time % window_ms
            current = accumulators.get(window_ms)
            if current is None or current[0] != start:
                if current is not None:
                    # Unreachable while timers fire in order (the window closed at its own timer); if it
                    # ever happens, every trade of the old window has been released: it is complete.
                    out.windows.append(current[1].to_metrics(symbol, current[0], current[0] + window_ms))
                current = accumulators[window_ms] = (start, WindowAccumulator())
                out.timers.append(window_close_time(start + window_ms, lateness))
            current[1].add(trade)
    open_windows.clear()
    for window_ms, (start, accumulator) in accumulators.items():
        if window_close_time(start + window_ms, lateness) <= timer:
            out.windows.append(accumulator.to_metrics(symbol, start, start + window_ms))
        else:
            open_windows[window_ms] = (start, accumulator.to_tuple())
    return out
