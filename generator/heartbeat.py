"""Watermark heartbeats on the wall clock: while the generator waits for the next trade, every partition of
the trades topic gets `{"heartbeat":<event time>}` (marketpulse/trade.py) once per interval, so that a
partition whose symbols are silent (a quiet symbol, a closed market, --symbols with fewer symbols than
partitions) still moves event time and the windows of both engines close (README "Idle partitions").

Why this is safe: it is sent only from the pacer's wait, that is when every trade due by now has been sent;
its event time is the wall clock's, so it promises what the trades themselves would. A deliberately delayed
trade (--late-fraction) is held back by less than the out-of-orderness bound, as against a trade."""

from __future__ import annotations

from collections.abc import Callable

from marketpulse.trade import heartbeat_value


class Heartbeats:
    """send(partition, value) writes one record to one partition; event_time_ms(now) is the event time the
    clock reading `now` stands for. tick(now) sends a round when the interval has passed."""

    def __init__(self, send: Callable[[int, bytes], None], partitions: list[int], interval_s: float,
                 event_time_ms: Callable[[float], int]):
        if interval_s <= 0:
            raise ValueError("heartbeat interval must be positive")
        self._send = send
        self.partitions = sorted(partitions)
        self.interval_s = interval_s
        self._event_time_ms = event_time_ms
        self._next: float | None = None
        self.sent = 0

    def tick(self, now: float) -> None:
        if self._next is not None and now < self._next:
            return
        value = heartbeat_value(self._event_time_ms(now))
        for partition in self.partitions:
            self._send(partition, value)
        self.sent += len(self.partitions)
        self._next = now + self.interval_s
