"""The pure part of the drain benchmarks (bench/drain.py): what they print and when an engine is done.

Every engine is measured alike: from the moment it is started (the plain consumer's process, the DataStream
job's submission, the SQL statements' submission) until the last window row of the drained topic is in
PostgreSQL (its `landed_at`, the server's clock, minus the server's clock read just before the start). The
printed seconds are rounded, and the printed rate is the printed records divided by the printed seconds, so
anyone can check the table with a pocket calculator; the ratio is the quotient of the printed rates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from marketpulse.analytics.windows import MILLIS_PER_SECOND, window_start_ms

SECONDS_DECIMALS = 2
BASELINE = "plain"  # bench/plain_consumer.py: the seeds' design, what every ratio is taken against


@dataclass(frozen=True)
class Figure:
    """One engine's drain: `seconds` is already the printed (rounded) value."""

    engine: str
    records: int
    seconds: float

    @classmethod
    def measured(cls, engine: str, records: int, seconds: float) -> Figure:
        rounded = round(seconds, SECONDS_DECIMALS)
        if rounded <= 0:
            raise ValueError(f"{engine}: {seconds!r} s cannot be a drain time")
        return cls(engine, records, rounded)

    @property
    def rate(self) -> int:
        """Records per second, from the printed records and seconds."""
        return round(self.records / self.seconds)

    def ratio_to(self, baseline: Figure) -> float:
        return self.rate / baseline.rate


def table(figures: Sequence[Figure], baseline: Figure | None = None) -> list[str]:
    """The lines of the result table; the ratio column is left out without a baseline."""
    header = f"{'engine':<12}{'records':>12}{'seconds':>10}{'rate/s':>10}"
    if baseline is not None:
        header += f"{'ratio to ' + baseline.engine:>16}"
    lines = [header]
    for figure in figures:
        line = f"{figure.engine:<12}{figure.records:>12,}{figure.seconds:>10.{SECONDS_DECIMALS}f}" \
               f"{figure.rate:>10,}"
        if baseline is not None:
            line += f"{figure.ratio_to(baseline):>16.3f}"
        lines.append(line)
    return lines


def closing_heartbeat_ms(max_event_ms: int, sizes_seconds: Iterable[int], out_of_orderness_ms: int,
                         grace_ms: int = 0) -> int:
    """The event time of the heartbeat that closes every window holding a trade at or before max_event_ms.

    A record at T moves its partition's watermark to T - out_of_orderness - grace - 1 ms (both engines), and
    a window [start, end) fires when the watermark reaches end - 1. A finite topic otherwise leaves its last
    windows open for ever: an engine would never write them, and "the last output row" would not exist."""
    last_end = max(window_start_ms(max_event_ms, size * MILLIS_PER_SECOND) + size * MILLIS_PER_SECOND
                   for size in sizes_seconds)
    return last_end + out_of_orderness_ms + grace_ms


class Completion:
    """Decides, from samples of an engine's window rows in PostgreSQL, when its output is complete.

    `expected` is the number of rows of one window size known in advance (the plain consumer's count: the
    topic has no late trade, so every engine should write the same windows). Once that many are there, the
    output is complete when the total (every window size) has not changed for `settle_s`: the window sinks
    flush at least every second, so rows fired by the same watermark are in by then. When the engine has read
    the whole topic and no row has come for `final_s`, its output is final but short of `expected`
    ("incomplete": it lost windows, e.g. to trades it judged late). Nothing changing for `stall_s` while it
    has not read everything means it is stuck."""

    def __init__(self, expected: int, settle_s: float, stall_s: float, final_s: float | None = None):
        final_s = stall_s if final_s is None else final_s
        if not settle_s < final_s <= stall_s:
            raise ValueError("need settle_s < final_s <= stall_s")
        self.expected = expected
        self.settle_s = settle_s
        self.final_s = final_s
        self.stall_s = stall_s
        self._total: int | None = None
        self._changed_at = 0.0

    def see(self, now: float, expected_size_rows: int, total_rows: int, all_read: bool = False) -> str | None:
        """"done", "incomplete", "stalled" or None (not yet) after this sample."""
        if total_rows != self._total:
            self._total, self._changed_at = total_rows, now
        quiet = now - self._changed_at
        if expected_size_rows >= self.expected and quiet >= self.settle_s:
            return "done"
        if all_read and quiet >= self.final_s:
            return "incomplete"
        if quiet >= self.stall_s:
            return "stalled"
        return None
