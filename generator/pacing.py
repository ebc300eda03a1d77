"""Pacing against a monotonic clock: each event has a due time (start + offset / speed) and we sleep until
it, so timing errors never accumulate (no sleep(1/N) drift) and a slow stretch is caught up afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_SLEEP_S = 0.25  # sleep in slices so a stop request is seen quickly even at low rates


class Pacer:
    def __init__(self, speed: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 should_stop: Callable[[], bool] = lambda: False, origin: float | None = None):
        """origin: the clock() value of offset 0 (default: now). A wall-clock run passes the instant its
        first event time stands for, so that every event is sent at its event time, not after the time it
        took to connect to Kafka."""
        if speed <= 0:
            raise ValueError("speed must be positive (use no pacer for 'as fast as possible')")
        self.speed = speed
        self._clock = clock
        self._sleep = sleep
        self._should_stop = should_stop
        self.start = clock() if origin is None else origin
        self.lag_s = 0.0  # how far behind schedule the last event was emitted

    def due(self, offset_s: float) -> float:
        return self.start + offset_s / self.speed

    def wait(self, offset_s: float) -> None:
        """Returns when the event at this offset is due (at once if we are behind)."""
        due = self.start + offset_s / self.speed
        now = self._clock()
        while now < due:
            if self._should_stop():
                return
            self._sleep(min(due - now, MAX_SLEEP_S))
            now = self._clock()
        self.lag_s = now - due
