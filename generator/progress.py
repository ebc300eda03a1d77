"""A progress line on stderr every few seconds (rate, total, labels, bad records, errors), with a bar
when the total is known."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class Progress:
    def __init__(self, every_s: float, total: int | None = None, stream=None,
                 clock: Callable[[], float] = time.monotonic):
        self.every_s = every_s
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self.start = clock()
        self._last_t = self.start
        self._last_count = 0
        self._next = self.start + every_s

    def due(self) -> bool:
        return self.every_s > 0 and self._clock() >= self._next

    def line(self, count: int, labels: int, bad: int, errors: int, lag_s: float, final: bool = False) -> str:
        now = self._clock()
        elapsed = max(now - self.start, 1e-9)
        window = max(now - self._last_t, 1e-9)
        current = (count - self._last_count) / window
        self._last_t, self._last_count = now, count
        self._next = now + self.every_s
        if self.total:
            done = min(count / self.total, 1.0)
            filled = int(done * 20)
            head = f"[{'#' * filled}{'.' * (20 - filled)}] {done:4.0%} {count:,}/{self.total:,} trades"
        else:
            head = f"{count:,} trades"
        rate = f"{count / elapsed:,.0f}/s avg"
        if not final:
            rate = f"{current:,.0f}/s now, {rate}"
        text = (f"generator: {elapsed:6.1f}s  {head}  {rate}  labels {labels:,}  bad {bad:,}  "
                f"delivery errors {errors:,}")
        if lag_s > 1.0 and not final:
            text += f"  (behind schedule by {lag_s:.1f}s)"
        return text

    def emit(self, *args, **kwargs) -> None:
        print(self.line(*args, **kwargs), file=self.stream, flush=True)
