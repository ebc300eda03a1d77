"""Carrying out a run: pacing against a monotonic clock, the driver loop, progress lines and the summary.

Pacing: each event has a due time (start + offset / speed) and the loop sleeps until it, so timing errors
never accumulate (no sleep(1/N) drift) and a slow stretch is caught up afterwards.

The driver takes events from a pure stream (stream.py, replay.py), paces them, writes their messages to a
sink, counts, and reports progress every few seconds of wall time. It stops at --count, at the end of the
stream (--duration, end of a replay file), or when asked to (Ctrl-C / SIGTERM), always flushing the sink.
execute() wires a RunPlan (options.py) to a sink and reports, for the command line.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from marketpulse.config import postgres_dsn

from .heartbeat import Heartbeats
from .options import UsageError, resolve
from .reference import write_symbols_to_postgres
from .replay import ReplayError
from .sink import FileSink, KafkaSink, Sink, SinkError
from .stream import Event

# --- pacing and progress ---

MAX_SLEEP_S = 0.25  # sleep in slices so a stop request is seen quickly even at low rates


class Pacer:
    """Sleeps until each event is due: offset_s of event time at `speed` x real time from `start`."""

    def __init__(self, speed: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 should_stop: Callable[[], bool] = lambda: False, origin: float | None = None,
                 while_waiting: Callable[[float], None] | None = None):
        """origin: the clock() value of offset 0 (default: now). A wall-clock run passes the instant its
        first event time stands for, so that every event is sent at its event time, not after the time it
        took to connect to Kafka. while_waiting(now) is called before each slice of sleep, when every
        event due by `now` has been sent (the heartbeats, generator/heartbeat.py)."""
        self._while_waiting = while_waiting
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
            if self._while_waiting is not None:
                self._while_waiting(now)
            self._sleep(min(due - now, MAX_SLEEP_S))
            now = self._clock()
        self.lag_s = now - due


class Progress:
    """A progress line on stderr every `every_s` seconds of wall time (rate, total, labels, bad records,
    errors), with a bar when the total is known."""

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

    def line(self, count: int, labels: int, bad: int, errors: int, lag_s: float, final: bool = False,
             history_left_s: float | None = None) -> str:
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
        if history_left_s is not None and not final:
            # Catching up on purpose: "behind schedule" would read like a fault.
            text += f"  (history: event time now-{history_left_s / 60:.1f} min)"
        elif lag_s > 1.0 and not final:
            text += f"  (behind schedule by {lag_s:.1f}s)"
        return text

    def emit(self, *args, **kwargs) -> None:
        print(self.line(*args, **kwargs), file=self.stream, flush=True)


# --- the driver ---

def serve_metrics(port: int, live: RunStats, sink: Sink) -> None:
    """/metrics on `port`: what the run has produced so far (marketpulse.metrics)."""
    from marketpulse.metrics import ReadingCollector, serve

    serve(port, "generator", ReadingCollector([
        ("marketpulse_generator_trades", "Messages produced to the trades topic (good and bad records)",
         "counter", lambda: live.trades),
        ("marketpulse_generator_bad_records", "Bad records injected (malformed on purpose, labelled)",
         "counter", lambda: live.bad),
        ("marketpulse_generator_labels", "Ground-truth labels produced to the injected topic",
         "counter", lambda: live.labels),
        ("marketpulse_generator_send_errors", "Messages Kafka did not take", "counter",
         lambda: getattr(sink, "errors", 0)),
    ]))


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
    heartbeats: int = 0  # watermark heartbeats (one per partition per round)

    @property
    def rate(self) -> float:
        return self.trades / self.seconds if self.seconds > 0 else 0.0


def run(events: Iterable[Event], sink: Sink, *, trades_topic: str, injected_topic: str,
        reference: Iterable[tuple[str, bytes, bytes]] = (), pacer: Pacer | None = None,
        count: int | None = None, wall_duration_s: float | None = None, progress: Progress | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic, live_from_s: float | None = None,
        announce: Callable[[str], None] | None = None, stats: RunStats | None = None) -> RunStats:
    """live_from_s: the offset where a history ends (RunPlan.live_from_s); `announce` gets one line when the
    first live event is due. `stats` (a fresh one if None) is brought up to date at every progress check,
    which /metrics reads."""
    stats = stats or RunStats()
    send = sink.send
    started = clock()
    for topic, key, value in reference:
        send(topic, key, value)
        stats.reference += 1
    trades = labels = bad = reference_count = 0
    deadline = started + wall_duration_s if wall_duration_s is not None else None
    in_history = live_from_s is not None
    try:
        for offset, _, _, messages in events:
            if count is not None and trades >= count:
                break
            if in_history and offset >= live_from_s:
                in_history = False
                if announce is not None:
                    announce(f"generator: history sent, {trades:,} trades ({live_from_s / 60:g} min of event "
                             f"time) in {clock() - started:.1f}s; live on the wall clock from now")
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
            # The clock is read after every event of a paced run (it sleeps between events anyway, and at
            # 5 trades/s 256 trades would be 50 s between progress lines) and every 256 trades of an
            # unpaced one (thousands per second: a few milliseconds apart).
            if pacer is not None or not trades & 0xFF:
                stats.trades, stats.labels, stats.bad = trades, labels, bad
                if deadline is not None and clock() >= deadline:
                    break
                if progress is not None and progress.due():
                    progress.emit(trades, labels, bad, sink.errors, pacer.lag_s if pacer else 0.0,
                                  history_left_s=live_from_s - offset if in_history else None)
    finally:
        stats.trades, stats.labels, stats.bad = trades, labels, bad
        stats.reference += reference_count
        sink.flush()
        stats.seconds = clock() - started
        stats.errors, stats.first_error = sink.errors, sink.first_error
    return stats


class StopFlag:
    """Set by SIGINT/SIGTERM: the run loop stops at the next event and flushes."""

    def __init__(self):
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def install(self) -> None:
        def handler(signum, _frame):
            if self.requested:  # a second Ctrl-C: give up on a clean stop
                raise KeyboardInterrupt
            self.requested = True
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


def summary(stats: RunStats, target: str) -> str:
    text = (f"generator: {stats.trades:,} trades ({stats.bad:,} bad), {stats.labels:,} labels, "
            f"{stats.reference:,} reference records to {target} in {stats.seconds:.1f}s "
            f"({stats.rate:,.0f} trades/s)")
    if stats.heartbeats:
        text += f", {stats.heartbeats:,} heartbeats"
    if stats.stopped_by_request:
        text += ", stopped on request"
    return text


def execute(args, settings, stop: StopFlag | None = None) -> tuple[int, RunStats | None]:
    """Runs the parsed options; returns (exit code, stats). Raises UsageError, SinkError, ReplayError."""
    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    try:
        plan = resolve(args, settings)
    except ValueError as err:
        if isinstance(err, ReplayError | UsageError):
            raise
        raise UsageError(str(err)) from None
    topics = plan.topics

    if args.reference_to_postgres and plan.owned:
        import psycopg2

        try:
            conn = psycopg2.connect(postgres_dsn(settings, "writer"), connect_timeout=10)
            try:
                written = write_symbols_to_postgres(conn, plan.owned)
            finally:
                conn.close()
        except psycopg2.Error as err:
            raise SinkError(f"Postgres: {str(err).strip().splitlines()[0]}") from None
        say(f"generator: upserted {written} symbols into Postgres")

    if stop is None:
        stop = StopFlag()
        stop.install()
    if args.output:
        sink: Sink = FileSink(args.output)
        target = "stdout" if args.output == "-" else args.output
    else:
        sink = KafkaSink(args.bootstrap_servers, acks=args.acks, linger_ms=args.linger_ms,
                         batch_size=args.batch_size, compression=args.compression,
                         wait_s=args.wait_for_broker, log=say)
        target = f"Kafka {args.bootstrap_servers} ({topics.trades}, {topics.injected}, {topics.reference})"
    say(f"generator: writing to {target}" +
        (f", {args.history_minutes:g} min of history at {args.history_rate:g} trades/s of event time as "
         f"fast as it goes, then live" if plan.live_from_s else "") +
        (f", {args.rate:g} trades/s" if plan.speed and not args.replay else "") +
        (f", replay {args.replay} at {args.speed:g}x" if args.replay else ""))

    origin = None
    if plan.wall_start_ms is not None:
        origin = time.monotonic() - (time.time() - plan.wall_start_ms / 1000)
    heartbeats = None
    if plan.speed and origin is not None and args.heartbeat_ms > 0 and isinstance(sink, KafkaSink):
        speed, wall_start_ms = plan.speed, plan.wall_start_ms
        heartbeats = Heartbeats(
            lambda partition, value: sink.send_to_partition(topics.trades, partition, value),
            sink.partitions(topics.trades), args.heartbeat_ms / 1000,
            event_time_ms=lambda now: wall_start_ms + int((now - origin) * speed * 1000))
    pacer = Pacer(plan.speed, should_stop=stop, origin=origin,
                  while_waiting=heartbeats.tick if heartbeats else None) if plan.speed else None
    progress = None if args.quiet or args.progress_every == 0 else \
        Progress(args.progress_every, total=args.count)
    live = RunStats()
    if args.metrics_port:
        serve_metrics(args.metrics_port, live, sink)
    try:
        stats = run(plan.events, sink, trades_topic=topics.trades, injected_topic=topics.injected,
                    reference=plan.reference, pacer=pacer, count=args.count,
                    wall_duration_s=plan.wall_duration_s, progress=progress, should_stop=stop,
                    live_from_s=plan.live_from_s, announce=None if args.quiet else say, stats=live)
    finally:
        sink.close()
    stats.errors, stats.first_error = sink.errors, sink.first_error
    stats.heartbeats = heartbeats.sent if heartbeats else 0
    say(summary(stats, target))
    if stats.errors:
        print(f"generator: error: {stats.errors:,} message(s) not delivered; first: {stats.first_error}",
              file=sys.stderr)
        return 1, stats
    return 0, stats
