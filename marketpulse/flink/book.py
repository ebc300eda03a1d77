"""The Flink-free core of the per-symbol operator (marketpulse.flink.functions.TradeAnalytics): when a trade
is late, which windows it goes into, when a window is final, and what survives a restore. Unit-tested in
tests/unit/test_job_helpers.py.

Two clocks, on purpose:

- The detector runs in ARRIVAL order. A symbol's trades come from one Kafka partition (the producer keys by
  symbol), so their arrival order is the producer's order and the same on every replay; each valid trade is
  scored the moment it arrives, late ones included (a late print is still a real trade, and skipping it would
  make the detector's input depend on the watermark, i.e. on how far the OTHER partitions had got). An
  anomaly therefore leaves the operator within one Python bundle of its trade, not after the watermark.
- Windows run in EVENT time and are final. With W the operator's watermark when a trade arrives and L the
  grace ([windows] grace_seconds; older configs call it allowed_lateness_seconds):

      late      event_time <= W - L        -> late_trades; in no window
      on time   otherwise                  -> added to its window of every size at once

  A window [start, end) is emitted once, when the watermark reaches end - 1 + L (with L = 0 the moment
  Flink's own event-time window fires). The grace thus delays a window's single result by L instead of
  revising it later, so every window_metrics row is final. (Not Flink's "allowed lateness", which fires a
  window on time and again for each late trade; this is Kafka Streams' grace period.) The accumulators
  are order-independent for counts, sums, extremes and open/close (marketpulse.analytics.windows), so
  adding trades as they arrive gives the event-time result; the float sums follow arrival order, which is
  fixed per symbol.

Restores (TaskManager crash, savepoint). Two things of the operator are NOT in a checkpoint, and the state
must not depend on them:
- its watermark: after a restore Flink starts every operator at Long.MIN_VALUE. Each symbol's book therefore
  keeps `closed_through`, the last close timer it fired, and a trade is judged against
  max(watermark, closed_through) (`effective_watermark`). Without it, a replayed trade that was late before
  the crash would be accepted into a window that had already been written, and its upsert would overwrite
  the complete row with a partial one.
- its Python timers: PyFlink flushes Python state before the checkpoint barrier, but timers registered from
  Python reach the Java timer service later (queued mailbox tasks, FLINK-37084), so a checkpoint can hold an
  open window whose close timer is not in it. Every timer therefore closes ALL windows due by then
  (`close_due`), and the operator registers the close times of a restored book again the first time it sees
  the symbol (`close_times`); registering a timer that exists is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

from marketpulse.analytics import (
    AnomalyDetector,
    DetectorConfig,
    WindowAccumulator,
    WindowMetrics,
    window_start_ms,
)
from marketpulse.analytics.multivariate import MultivariateConfig, WindowModel, WindowScore
from marketpulse.trade import Trade

MIN_WATERMARK = -(2**63)  # Long.MIN_VALUE: no watermark yet
BOOK_STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class AnalyticsConfig:
    window_sizes_ms: tuple[int, ...]
    grace_ms: int
    detector: DetectorConfig
    state_ttl_minutes: int
    # The multivariate window detector, on the windows of window_sizes_ms[0] ([windows] size_seconds); None:
    # off (tests of the windows alone).
    multivariate: MultivariateConfig | None = None

    def __post_init__(self) -> None:
        if not self.window_sizes_ms or len(set(self.window_sizes_ms)) != len(self.window_sizes_ms):
            raise ValueError(f"window sizes must be distinct and non-empty: {self.window_sizes_ms}")
        if self.grace_ms < 0 or self.state_ttl_minutes <= 0:
            raise ValueError("the grace must not be negative, the state TTL must be positive")
        if any(size <= 0 or size % 1000 for size in self.window_sizes_ms):
            raise ValueError(f"window sizes must be whole seconds: {self.window_sizes_ms}")

    @classmethod
    def from_settings(cls, settings) -> AnalyticsConfig:
        """[windows] size_seconds and short_size_seconds (if different and positive), [detector]."""
        windows = settings.windows
        sizes = [int(windows.size_seconds)]
        short = int(getattr(windows, "short_size_seconds", 0) or 0)
        if short > 0 and short != sizes[0]:
            sizes.append(short)
        return cls(
            window_sizes_ms=tuple(size * 1000 for size in sizes),
            grace_ms=int(windows.grace_seconds) * 1000,
            detector=DetectorConfig.from_settings(settings),
            state_ttl_minutes=int(settings.detector.state_ttl_minutes),
            multivariate=MultivariateConfig.from_settings(settings),
        )

    @property
    def scored_window_ms(self) -> int:
        """The window size the multivariate detector scores: the first (long) one."""
        return self.window_sizes_ms[0]


def is_late(event_time: int, watermark: int, grace_ms: int) -> bool:
    """At or behind the watermark by more than the grace (watermark Long.MIN_VALUE: never)."""
    return event_time <= watermark - grace_ms


def window_close_time(window_end: int, grace_ms: int) -> int:
    return window_end - 1 + grace_ms


class SymbolBook:
    """One symbol's open windows and the last close timer it fired.

    Kept in Flink state as this live object: PyFlink's state cache hands the same object back until the
    bundle ends, and pickling it (once per bundle, __reduce__) stores only `to_state()`, a plain versioned
    tuple, so what is checkpointed does not depend on this class's layout."""

    __slots__ = ("closed_through", "windows")

    def __init__(self) -> None:
        self.closed_through = MIN_WATERMARK
        # (size_ms, window_start) -> accumulator of the on-time trades so far
        self.windows: dict[tuple[int, int], WindowAccumulator] = {}

    def effective_watermark(self, watermark: int) -> int:
        """The watermark this symbol's trades are judged against: never behind what it has closed already."""
        return max(watermark, self.closed_through)

    def add(self, trade: Trade, config: AnalyticsConfig) -> list[int]:
        """Adds an on-time trade to its window of every size; returns the close times of windows it opened."""
        opened = []
        for size in config.window_sizes_ms:
            key = (size, window_start_ms(trade.event_time, size))
            accumulator = self.windows.get(key)
            if accumulator is None:
                accumulator = self.windows[key] = WindowAccumulator()
                opened.append(window_close_time(key[1] + size, config.grace_ms))
            accumulator.add(trade)
        return opened

    def close_due(self, symbol: str, timer: int, config: AnalyticsConfig) -> list[WindowMetrics] | None:
        """Closes every window whose close time is <= timer (its own and any whose timer was lost), in
        (close time, size) order; None for a timer at or before one already fired (again after a restore)."""
        if timer <= self.closed_through:
            return None
        self.closed_through = timer
        due = sorted((close, size, start) for size, start in self.windows
                     if (close := window_close_time(start + size, config.grace_ms)) <= timer)
        return [self.windows.pop((size, start)).to_metrics(symbol, start, start + size)
                for _close, size, start in due]

    def close_times(self, config: AnalyticsConfig) -> list[int]:
        """The close timers this book is waiting for, to register again after a restore."""
        return sorted({window_close_time(start + size, config.grace_ms)
                       for size, start in self.windows})

    def to_state(self) -> tuple:
        return (BOOK_STATE_VERSION, self.closed_through,
                tuple((size, start, accumulator.to_tuple())
                      for (size, start), accumulator in self.windows.items()))

    @classmethod
    def from_state(cls, state) -> SymbolBook:
        """From to_state(), or a live book (what the state cache returns within a worker's life)."""
        if isinstance(state, SymbolBook):
            return state
        book = cls()
        if state is None:
            return book
        version, book.closed_through, windows = state
        if version != BOOK_STATE_VERSION:
            raise ValueError(f"symbol book state version {version} is not {BOOK_STATE_VERSION}")
        book.windows = {(size, start): WindowAccumulator.from_tuple(values)
                        for size, start, values in windows}
        return book

    def __reduce__(self):
        # Pickled as its plain state tuple: unpickling yields the tuple, from_state() makes the book again.
        return tuple, (self.to_state(),)


class DetectorSlot:
    """Holds a symbol's live AnomalyDetector in Flink state, like SymbolBook: the same object comes back from
    the state cache within a worker's life, and it is pickled as the detector's plain `to_state()` tuple."""

    __slots__ = ("detector",)

    def __init__(self, detector: AnomalyDetector) -> None:
        self.detector = detector

    @classmethod
    def from_state(cls, config: DetectorConfig, state) -> DetectorSlot:
        """From AnomalyDetector.to_state() or None (first trade, expired TTL), or a live slot as it is."""
        if isinstance(state, DetectorSlot):
            return state
        return cls(AnomalyDetector.from_state(config, state))

    def __reduce__(self):
        return tuple, (self.detector.to_state(),)


class WindowModelSlot:
    """Holds a symbol's live multivariate WindowModel in Flink state, like DetectorSlot: pickled as the
    model's plain `to_state()` tuple."""

    __slots__ = ("model",)

    def __init__(self, model: WindowModel) -> None:
        self.model = model

    @classmethod
    def from_state(cls, config: MultivariateConfig, state) -> WindowModelSlot:
        """From WindowModel.to_state() or None (first window, expired TTL), or a live slot as it is."""
        if isinstance(state, WindowModelSlot):
            return state
        return cls(WindowModel.from_state(config, state))

    def score(self, windows: list[WindowMetrics], size_ms: int) -> list[WindowScore]:
        """Pushes the closed windows of the scored size, in order; the rows of those past warm-up."""
        scores = []
        for window in windows:
            if window.window_end - window.window_start == size_ms:
                scored = self.model.push(window)
                if scored is not None:
                    scores.append(scored)
        return scores

    def __reduce__(self):
        return tuple, (self.model.to_state(),)
