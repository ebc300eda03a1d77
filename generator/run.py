"""The driver: takes events from a pure stream, paces them, writes their messages to a sink, counts, and
reports progress. Stops at --count, at the end of the stream (--duration, end of a replay file), or when
asked to (Ctrl-C / SIGTERM), always flushing the sink."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .pacing import Pacer
from .progress import Progress
from .sink import Sink
from .stream import Event

_BAD_LABEL = b'{"kind":"bad"'


@dataclass
class RunStats:
    trades: int = 0  # messages on the trades topic (good and bad)
    labels: int = 0  # messages on the injected (ground truth) topic
    bad: int = 0
    reference: int = 0
    seconds: float = 0.0
    errors: int = 0
    first_error: str | None = None
    stopped_by_request: bool = False

    @property
    def rate(self) -> float:
        return self.trades / self.seconds if self.seconds > 0 else 0.0


def run(events: Iterable[Event], sink: Sink, *, trades_topic: str, injected_topic: str,
        reference: Iterable[tuple[str, bytes, bytes]] = (), pacer: Pacer | None = None,
        count: int | None = None, wall_duration_s: float | None = None, progress: Progress | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic) -> RunStats:
    stats = RunStats()
    send = sink.send
    started = clock()
    for topic, key, value in reference:
        send(topic, key, value)
        stats.reference += 1
    trades = labels = bad = reference_count = 0
    deadline = started + wall_duration_s if wall_duration_s is not None else None
    try:
        for offset, _, _, messages in events:
            if count is not None and trades >= count:
                break
            if pacer is not None:
                pacer.wait(offset)
            if should_stop():
                stats.stopped_by_request = True
                break
            for topic, key, value in messages:
                send(topic, key, value)
                if topic == trades_topic:
                    trades += 1
                elif topic == injected_topic:
                    labels += 1
                    if value.startswith(_BAD_LABEL):
                        bad += 1
                else:  # a replayed symbol's reference record
                    reference_count += 1
            # Checking the clock costs little next to a send; do it every 256 trades.
            if not trades & 0xFF:
                if deadline is not None and clock() >= deadline:
                    break
                if progress is not None and progress.due():
                    progress.emit(trades, labels, bad, sink.errors, pacer.lag_s if pacer else 0.0)
    finally:
        stats.trades, stats.labels, stats.bad = trades, labels, bad
        stats.reference += reference_count
        sink.flush()
        stats.seconds = clock() - started
        stats.errors, stats.first_error = sink.errors, sink.first_error
    return stats
