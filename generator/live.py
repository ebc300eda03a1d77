"""Live sources (`python -m generator --source yahoo|alphavantage`): poll real intraday bars and publish
them as trades, on a trading calendar, as a good API citizen.

Bars become trades on the existing `trades` topic, in the existing trade schema, so both engines, the
detector and the dashboard work on them unchanged (a separate `bars` topic would need a second source,
validation and lateness path in both engines for the same windows). `bar_trades` turns one bar into up to
four prints inside the bar's interval, so that any window at least as long as the bar has exactly the bar's
open, high, low, close and volume:

    open   at start                 size volume // 4
    low    at start + interval/4    (high first when the bar closed down)
    high   at start + interval/2
    close  at end - 1 ms            size volume - 3 * (volume // 4)

Prints of size 0 (a bar with volume < 4) are left out, the close always stays; a bar with volume 0 or
impossible prices is skipped. VWAP of such a window is the volume-weighted mean of those four prices (an
approximation: a bar has no VWAP). side: BUY on an up bar, SELL on a down bar. trade_id is
`<source>:<symbol>:<bar start ms>:<o|l|h|c>`: the same bar gives the same ids on every poll.

Dedup and restart: only bars that are complete (end <= now) and newer than the last one published for
the symbol are sent. The last one comes from Kafka itself at start (the newest of this source's trade ids
in the last [live] resume_scan_records records of each partition), so a restart, even after a crash,
resumes where the topic ends: no duplicate and no gap, without a state file.

Politeness: one request per symbol per bar interval, at the bar boundary plus poll_delay_seconds; a
per-minute and per-day request budget per source ([live]); exponential back-off on rate limits, HTTP 429/5xx
and network errors. Outside trading hours (exchange_calendars, [live] exchange) the source says so once,
writes the state to PostgreSQL (market_status, read by the dashboard) and sends nothing until the next open.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from marketpulse.trade import Trade, heartbeat_value

from .live_sources import AlphaVantageSource, Bar, BarSource, LiveSourceError, YahooSource, valid_bar

LIVE_SOURCES = ("yahoo", "alphavantage")


def bar_trades(bar: Bar, source: str) -> list[Trade]:
    if bar.volume <= 0 or not valid_bar(bar):
        return []
    quarter = bar.volume // 4
    step = bar.interval_s * 1000 // 4
    up = bar.close >= bar.open
    side = "BUY" if up else "SELL"
    middle = [("l", bar.low), ("h", bar.high)] if up else [("h", bar.high), ("l", bar.low)]
    prints = [("o", bar.open, bar.start_ms, quarter),
              (middle[0][0], middle[0][1], bar.start_ms + step, quarter),
              (middle[1][0], middle[1][1], bar.start_ms + 2 * step, quarter),
              ("c", bar.close, bar.end_ms - 1, bar.volume - 3 * quarter)]
    return [Trade(trade_id=f"{source}:{bar.symbol}:{bar.start_ms}:{tag}", symbol=bar.symbol, price=price,
                  size=size, side=side, event_time=at)
            for tag, price, at, size in prints if size > 0]


def parse_trade_id(trade_id: str, source: str) -> tuple[str, int] | None:
    """(symbol, bar start ms) of one of `source`'s trade ids, else None."""
    parts = trade_id.split(":")
    if len(parts) != 4 or parts[0] != source or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def new_bars(bars: list[Bar], last_start_ms: int | None, now_ms: int) -> list[Bar]:
    """The complete bars after the last one published, oldest first (a poll overlaps the previous ones)."""
    return [bar for bar in bars
            if bar.end_ms <= now_ms and (last_start_ms is None or bar.start_ms > last_start_ms)]


def live_heartbeat_time(last: dict[str, int], symbols: list[str], interval_s: int,
                   out_of_orderness_ms: int) -> int | None:
    """The event time a heartbeat may carry after a poll round (generator/heartbeat.py), or None.

    Every symbol's next bar starts at least one interval after its last published one, and its first print
    is at that start. A heartbeat at that start plus the jobs' out-of-orderness bound puts the watermark
    1 ms before it: no print to come is late, and the window of the last published bar closes (with a
    heartbeat at the start alone it would wait for the next trading day). The slowest symbol decides."""
    if not symbols or any(symbol not in last for symbol in symbols):
        return None
    return min(last[symbol] for symbol in symbols) + interval_s * 1000 + out_of_orderness_ms


def next_poll_ms(now_ms: int, interval_s: int, delay_s: float) -> int:
    """The next bar boundary plus the delay: the moment the bar that just ended is worth asking for."""
    interval_ms = interval_s * 1000
    due = (now_ms // interval_ms) * interval_ms + int(delay_s * 1000)
    return due if due > now_ms else due + interval_ms


class RequestBudget:
    """At most `per_minute` requests in any 60 s and `per_day` in any 24 h (0 = unlimited)."""

    def __init__(self, per_minute: int, per_day: int):
        self.limits = [(60.0, per_minute), (86400.0, per_day)]
        self.sent: list[float] = []

    def wait_s(self, now: float) -> float:
        waits = [0.0]
        for span, limit in self.limits:
            recent = [t for t in self.sent if t > now - span]
            if limit and len(recent) >= limit:
                waits.append(recent[-limit] + span - now)
        return max(waits)

    def take(self, now: float) -> None:
        self.sent = [t for t in self.sent if t > now - 86400.0] + [now]


@dataclass
class Backoff:
    initial_s: float
    max_s: float
    max_failures: int | None = None  # give up after this many in a row (--once); None: never
    failures: int = 0

    def exhausted(self) -> bool:
        return self.max_failures is not None and self.failures >= self.max_failures

    def next_s(self) -> float:
        self.failures += 1
        return min(self.max_s, self.initial_s * 2 ** (self.failures - 1))

    def reset(self) -> None:
        self.failures = 0


@dataclass(frozen=True)
class MarketStatus:
    exchange: str
    is_open: bool
    next_open: datetime | None
    next_close: datetime | None

    def line(self) -> str:
        if self.is_open:
            return f"market open ({self.exchange}) until {fmt(self.next_close)}"
        return f"market closed ({self.exchange}): opens {fmt(self.next_open)}"


def fmt(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "?"


class TradingCalendar:
    """Sessions of one exchange from exchange_calendars (holidays and early closes included)."""

    def __init__(self, exchange: str):
        import exchange_calendars
        import pandas as pd

        self.exchange, self._pd = exchange, pd
        try:
            self.calendar = exchange_calendars.get_calendar(exchange)
        except Exception as err:  # InvalidCalendarName and friends
            raise LiveSourceError(f"unknown exchange calendar {exchange!r}: {err}") from None

    def status(self, now: datetime) -> MarketStatus:
        minute = self._pd.Timestamp(now).floor("min")
        is_open = bool(self.calendar.is_open_on_minute(minute))
        next_open = self.calendar.next_open(minute).to_pydatetime()
        next_close = self.calendar.next_close(minute).to_pydatetime()
        return MarketStatus(self.exchange, is_open, next_open, next_close)


def last_published(bootstrap_servers: str, topic: str, source: str, scan: int) -> dict[str, int]:
    """{symbol: start ms of the newest bar of `source` among the last `scan` records of each partition}."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                             consumer_timeout_ms=10000)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            return {}
        consumer.assign(partitions)
        ends, begins = consumer.end_offsets(partitions), consumer.beginning_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, max(begins[tp], ends[tp] - scan))
        last: dict[str, int] = {}
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            batch = consumer.poll(timeout_ms=5000)
            if not batch:
                break
            for records in batch.values():
                for record in records:
                    try:
                        parsed = parse_trade_id(str(json.loads(record.value)["trade_id"]), source)
                    except (ValueError, TypeError, KeyError):
                        continue
                    if parsed and parsed[1] > last.get(parsed[0], -1):
                        last[parsed[0]] = parsed[1]
        return last
    finally:
        consumer.close()


def build_source(name: str, live, environ) -> BarSource:
    if name == "yahoo":
        return YahooSource(live.interval)
    key = environ.get("MARKETPULSE_ALPHAVANTAGE_API_KEY", "")
    if not key and live.alphavantage_api_key_file:
        try:
            with open(live.alphavantage_api_key_file) as handle:
                key = handle.read().strip()
        except OSError as err:
            raise LiveSourceError(f"bad API key: cannot read {live.alphavantage_api_key_file}: "
                                  f"{err.strerror}") from None
    return AlphaVantageSource(key, live.interval, live.alphavantage_url)


class LiveRunner:
    """The poll loop. `publish(trades)` sends and flushes; `status_out(status)` records the market state."""

    def __init__(self, source: BarSource, symbols: list[str], *, budget: RequestBudget, backoff: Backoff,
                 calendar, publish: Callable[[list[Trade]], None], last: dict[str, int],
                 poll_delay_s: float = 5.0, status_out: Callable[[MarketStatus], None] = lambda s: None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 should_stop: Callable[[], bool] = lambda: False, say: Callable[[str], None] = print,
                 heartbeat: Callable[[int], None] | None = None, out_of_orderness_ms: int = 0):
        """heartbeat(event_time) sends one round of watermark heartbeats (not with --once)."""
        self.source, self.symbols, self.budget, self.backoff = source, list(symbols), budget, backoff
        self.calendar, self.publish, self.last = calendar, publish, dict(last)
        self.poll_delay_s = poll_delay_s
        self.status_out, self.clock, self.sleep, self.should_stop, self.say = \
            status_out, clock, sleep, should_stop, say
        self.heartbeat, self.out_of_orderness_ms = heartbeat, out_of_orderness_ms
        self.published = self.bars = self.requests = 0
        self._said_status: tuple | None = None

    def _wait(self, seconds: float) -> None:
        end = self.clock() + seconds
        while not self.should_stop() and self.clock() < end:
            self.sleep(min(1.0, max(0.0, end - self.clock())))

    def poll_once(self) -> None:
        """One request per symbol (within the budget), publishing the new complete bars."""
        for symbol in list(self.symbols):
            if self.should_stop():
                return
            wait = self.budget.wait_s(self.clock())
            if wait > 0:
                self.say(f"generator: request budget used up; next {self.source.name} request in "
                         f"{wait:.0f} s")
                self._wait(wait)
            while not self.should_stop():
                self.budget.take(self.clock())
                self.requests += 1
                try:
                    bars = self.source.fetch(symbol)
                    self.backoff.reset()
                    break
                except LiveSourceError as err:
                    if not err.retry:
                        if str(err).startswith("unknown symbol"):
                            self.say(f"generator: {err}; dropping it")
                            self.symbols.remove(symbol)
                            bars = []
                            break
                        raise
                    pause = self.backoff.next_s()
                    if self.backoff.exhausted():
                        tries = self.backoff.failures
                        raise LiveSourceError(f"{err} (gave up after {tries} attempts)") from None
                    self.say(f"generator: {err}; retrying in {pause:g} s")
                    self._wait(pause)
            else:
                return
            fresh = new_bars(bars, self.last.get(symbol), int(self.clock() * 1000))
            trades = [trade for bar in fresh for trade in bar_trades(bar, self.source.name)]
            if trades:
                self.publish(trades)
                self.published += len(trades)
            if fresh:
                self.bars += len(fresh)
                self.last[symbol] = fresh[-1].start_ms
        if not self.symbols:
            raise LiveSourceError("no symbol left to poll (every one was unknown to the source)")

    def market(self, once: bool = False) -> MarketStatus | None:
        if self.calendar is None:
            return None
        status = self.calendar.status(datetime.fromtimestamp(self.clock(), UTC))
        self.status_out(status)
        key = (status.is_open, status.next_open)
        if key != self._said_status:
            closed = "; polling once anyway (--once)" if once else "; idling, sending nothing"
            self.say(f"generator: {status.line()}" + ("" if status.is_open else closed))
            self._said_status = key
        return status

    def beat(self) -> None:
        """A heartbeat round after a poll (and while the market is closed): silent partitions, and the
        window of the day's last bar, move on."""
        if self.heartbeat is None:
            return
        at = live_heartbeat_time(self.last, self.symbols, self.source.interval_s, self.out_of_orderness_ms)
        if at is not None:
            self.heartbeat(at)

    def run(self, once: bool = False) -> None:
        while not self.should_stop():
            status = self.market(once)
            if once or status is None or status.is_open:
                self.poll_once()
                self.say(f"generator: {self.source.name}: {self.requests} requests, {self.bars} new bars, "
                         f"{self.published} trades published")
                if once:
                    return
                self.beat()
                now_ms = int(self.clock() * 1000)
                self._wait((next_poll_ms(now_ms, self.source.interval_s, self.poll_delay_s) - now_ms) / 1000)
            else:  # closed: look again at the next open or in 5 min (the status row stays fresh)
                self.beat()
                until_open = (status.next_open.timestamp() - self.clock()) if status.next_open else 900
                self._wait(max(1.0, min(300.0, until_open)))


def write_status(dsn: str, source: str) -> Callable[[MarketStatus], None]:
    """A status_out that upserts market_status (db/schema/008_market_status.sql) for the dashboard."""
    import psycopg2

    def out(status: MarketStatus) -> None:
        try:
            with psycopg2.connect(dsn, connect_timeout=5) as conn, conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO market_status (source, exchange, is_open, next_open, next_close, "
                    "updated_at) VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (source) DO UPDATE SET "
                    "exchange = EXCLUDED.exchange, is_open = EXCLUDED.is_open, "
                    "next_open = EXCLUDED.next_open, next_close = EXCLUDED.next_close, updated_at = now()",
                    (source, status.exchange, status.is_open, status.next_open, status.next_close))
            conn.close()
        except psycopg2.Error as err:
            print(f"generator: market status not recorded: {str(err).strip().splitlines()[0]}",
                  file=sys.stderr)
    return out


def execute_live(args, settings, should_stop: Callable[[], bool], environ) -> int:
    """`python -m generator --source yahoo|alphavantage ...`; raises LiveSourceError / SinkError."""
    from marketpulse.config import postgres_dsn
    from marketpulse.trade import SYMBOL_PATTERN

    from .sink import FileSink, KafkaSink, SinkError

    live = settings.live

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    bad = [s for s in symbols if not SYMBOL_PATTERN.fullmatch(s)]
    if bad or not symbols:
        raise LiveSourceError(f"unknown symbol: {', '.join(bad) or '(none given)'} is not a ticker")
    source = build_source(args.source, live, environ)
    calendar = None if args.ignore_calendar else TradingCalendar(live.exchange)
    if args.output:
        sink, last = FileSink(args.output), {}
    else:
        sink = KafkaSink(args.bootstrap_servers, acks="all", linger_ms=args.linger_ms,
                         batch_size=args.batch_size, compression=args.compression,
                         wait_s=args.wait_for_broker, log=say)
        last = last_published(args.bootstrap_servers, args.topic, source.name, int(live.resume_scan_records))
        if last:
            resumed = ", ".join(f"{s} {datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%d %H:%M}"
                                for s, ms in sorted(last.items()))
            say(f"generator: resuming after the last {source.name} bars on {args.topic}: {resumed}")

    def publish(trades: list[Trade]) -> None:
        for trade in trades:
            sink.send(args.topic, trade.symbol.encode(), trade.to_json().encode())
        sink.flush()  # before the bars count as published: a crash after this resumes from Kafka
        if sink.errors:
            raise SinkError(f"{sink.errors} message(s) not delivered; first: {sink.first_error}")

    heartbeats = None
    if isinstance(sink, KafkaSink) and args.heartbeat_ms > 0:
        partitions = sink.partitions(args.topic)

        def heartbeats(event_time_ms: int) -> None:
            value = heartbeat_value(event_time_ms)
            for partition in partitions:
                sink.send_to_partition(args.topic, partition, value)
            sink.flush()

    status_out = write_status(postgres_dsn(settings, "writer"), source.name) if args.status_to_postgres else \
        (lambda status: None)
    say(f"generator: live source {source.name}, {source.interval_s // 60}-minute bars of "
        f"{', '.join(symbols)} -> {args.output or args.topic}")
    runner = LiveRunner(source, symbols, budget=RequestBudget(*budget_for(source.name, live)),
                        backoff=Backoff(float(live.backoff_initial_seconds), float(live.backoff_max_seconds),
                                        max_failures=3 if args.once else None),
                        calendar=calendar, publish=publish, last=last,
                        poll_delay_s=float(live.poll_delay_seconds),
                        status_out=status_out, should_stop=should_stop, say=say,
                        heartbeat=heartbeats,
                        out_of_orderness_ms=int(settings.windows.max_out_of_orderness_ms))
    try:
        runner.run(once=args.once)
    finally:
        sink.close()
    return 0


def budget_for(source: str, live) -> tuple[int, int]:
    return (int(getattr(live, f"{source}_requests_per_minute")),
            int(getattr(live, f"{source}_requests_per_day")))
