"""Command line: `python -m generator --help`.

Exit codes: 0 done (also after Ctrl-C / SIGTERM once everything buffered was delivered), 1 failure (broker
unreachable, delivery errors, unwritable output, Postgres error), 2 bad usage (invalid option values, missing
replay file). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from marketpulse.config import ConfigError, load_settings, postgres_dsn

from .anomalies import KINDS as ANOMALY_KINDS
from .anomalies import AnomalyOptions
from .bad_records import KINDS as BAD_KINDS
from .bad_records import BadOptions
from .disorder import DisorderOptions
from .pacing import Pacer
from .progress import Progress
from .reference import reference_message, write_symbols_to_postgres
from .replay import ReplayError, parse_timestamp, replay_events
from .run import RunStats, run
from .seeding import run_token
from .sharding import SHARD_ENV, parse_shard, shard_from_env
from .sink import FileSink, KafkaSink, Sink, SinkError
from .stream import StreamOptions, Topics, generate, owned_symbols
from .universe import build_universe, check_ticker, synthetic_tickers

# Event time of a seeded run when --start-time is not given: a fixed instant (a market open), so the run is
# reproducible.
DEFAULT_SIM_START = "2025-01-02T14:30:00Z"


class UsageError(ValueError):
    """A bad option value: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line instead of argparse's page of usage: the options are many; --help lists them.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {value}")
    return value


def _non_negative(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0: {value}")
        return value
    return parse


def _fraction(text: str) -> float:
    value = _non_negative(float)(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {value}")
    return value


def _range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX, got {text!r}") from None
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError(f"need 0 < MIN <= MAX, got {text!r}")
    return low, high


def _kinds(allowed: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        kinds = tuple(k.strip() for k in text.split(",") if k.strip())
        unknown = [k for k in kinds if k not in allowed]
        if unknown or not kinds:
            raise argparse.ArgumentTypeError(
                f"unknown kind(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(allowed)}")
        return kinds
    return parse


def _start_time(text: str) -> int:
    try:
        return parse_timestamp(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _shard(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser(settings) -> argparse.ArgumentParser:
    gen = settings.generator
    kafka = settings.kafka
    parser = _Parser(
        prog="python -m generator",
        description="Synthetic stock trades (or a CSV replay) to Kafka or a file: GBM prices per symbol, "
                    "reproducible with --seed, shardable, with labelled anomalies, late and bad records. "
                    "Defaults come from conf/pipeline.toml ([generator], [kafka]).",
        epilog="Ground truth of every injected anomaly, late and bad record goes to the injected topic "
               "(JSON, see generator/README.md). Exit codes: 0 ok (also after Ctrl-C/SIGTERM with "
               "everything delivered), 1 failure, 2 bad usage.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    what = parser.add_argument_group("what to generate")
    universe = what.add_mutually_exclusive_group()
    universe.add_argument("--symbols", default=",".join(gen.symbols), metavar="A,B,...",
                          help="comma-separated tickers; the ten defaults have realistic prices and "
                               "volatilities, others get seeded synthetic ones")
    universe.add_argument("--universe", type=_positive_int, metavar="N",
                          help="N symbols: the ten defaults, then synthetic SYM0011, SYM0012, ...")
    what.add_argument("--vol-scale", type=_non_negative(float), default=1.0, metavar="X",
                      help="multiply every symbol's volatility (livelier charts in a short demo)")
    what.add_argument("--shard", type=_shard, metavar="i/n",
                      help=f"own only the symbols whose index %% n == i (replay: crc32(symbol) %% n == i); "
                           f"also from ${SHARD_ENV}; default: all symbols")

    timing = parser.add_argument_group("rate, clock and stopping")
    timing.add_argument("--rate", type=_non_negative(float), default=float(gen.rate), metavar="N",
                        help="trades per second (all symbols of all shards together), paced against a "
                             "monotonic clock; 0 = as fast as possible")
    timing.add_argument("--count", type=_positive_int, metavar="N",
                        help="stop after N messages on the trades topic (good + bad), per instance")
    timing.add_argument("--duration", type=_non_negative(float), metavar="S",
                        help="stop after S seconds: of event time with the simulated clock, else of wall "
                             "time")
    timing.add_argument("--seed", type=int, metavar="N",
                        help=f"random seed (default {gen.seed} from the config); giving it selects the "
                             f"simulated clock, so the output is byte-identical for the same options")
    timing.add_argument("--start-time", type=_start_time, metavar="T",
                        help=f"event time of the start, epoch ms or ISO 8601; selects the simulated clock "
                             f"(seeded default: {DEFAULT_SIM_START})")
    timing.add_argument("--clock", choices=("auto", "wall", "sim"), default="auto",
                        help="wall: event times follow the wall clock; sim: event times start at "
                             "--start-time and advance by exponential inter-arrival times, independent of "
                             "the wall clock; auto: sim when --seed or --start-time is given")
    timing.add_argument("--event-rate", type=_non_negative(float), metavar="R",
                        help="simulated clock only: trades per second of event time (default: --rate, or "
                             f"{gen.rate} when --rate is 0)")

    inject = parser.add_argument_group("anomalies, disorder and bad records (all labelled)")
    how_often = inject.add_mutually_exclusive_group()
    how_often.add_argument("--anomaly-rate", type=_fraction, default=0.0, metavar="P",
                           help="probability that a trade is an anomaly")
    how_often.add_argument("--anomaly-every", type=_positive_int, metavar="N",
                           help="every N-th trade of each symbol is an anomaly")
    inject.add_argument("--anomaly-kinds", type=_kinds(ANOMALY_KINDS), default=ANOMALY_KINDS,
                        metavar="K,...", help=f"from {', '.join(ANOMALY_KINDS)}")
    inject.add_argument("--spike-pct", type=_range, default=(5.0, 50.0), metavar="MIN:MAX",
                        help="size of a price spike/crash in percent of the model price (one trade; the "
                             "next trade is back at the model price)")
    inject.add_argument("--volume-factor", type=_range, default=AnomalyOptions.volume_factor,
                        metavar="MIN:MAX",
                        help="a volume spike is this many times the symbol's median trade size")
    inject.add_argument("--late-fraction", type=_fraction, default=0.0, metavar="F",
                        help="share of trades held back and emitted after later trades")
    inject.add_argument("--max-delay-ms", type=_positive_int, default=5000, metavar="MS",
                        help="a held-back trade is delayed by 1..MS ms of event time")
    inject.add_argument("--bad-fraction", type=_fraction, default=0.0, metavar="F",
                        help="share of trade messages replaced by malformed ones (each unique, each "
                             "failing marketpulse.trade.parse_trade)")
    inject.add_argument("--bad-kinds", type=_kinds(BAD_KINDS), default=BAD_KINDS, metavar="K,...",
                        help=f"from {', '.join(BAD_KINDS)}")

    replay = parser.add_argument_group("replay")
    replay.add_argument("--replay", metavar="FILE.csv",
                        help="stream trades from a CSV (header: timestamp,symbol,price,size[,side]; "
                             "timestamp epoch ms or ISO 8601) instead of the model, keeping their event "
                             "times; see generator/samples/sample_trades.csv")
    replay.add_argument("--speed", type=_non_negative(float), default=1.0, metavar="X",
                        help="replay at X times real time; 0 = as fast as possible")

    out = parser.add_argument_group("output")
    out.add_argument("--output", metavar="FILE|-",
                     help="write 'topic<TAB>key<TAB>value' lines to FILE or stdout instead of Kafka")
    out.add_argument("--topic", default=kafka.trades_topic, help="trades topic")
    out.add_argument("--injected-topic", default=kafka.injected_topic,
                     help="ground-truth topic (anomaly, late and bad labels)")
    out.add_argument("--reference-topic", default=kafka.reference_topic,
                     help="reference topic (company, sector, exchange per symbol; key = symbol)")
    out.add_argument("--no-reference", action="store_true",
                     help="do not publish the reference records")
    out.add_argument("--reference-to-postgres", action="store_true",
                     help="also upsert the reference records into the Postgres `symbols` table")
    out.add_argument("--progress-every", type=_non_negative(float), default=5.0, metavar="S",
                     help="progress line on stderr every S seconds (0 = never)")
    out.add_argument("--quiet", action="store_true", help="no progress or summary lines")

    k = parser.add_argument_group("Kafka producer")
    k.add_argument("--bootstrap-servers", default=kafka.bootstrap_servers, metavar="HOST:PORT,...",
                   help="default from the config (MARKETPULSE_KAFKA_BOOTSTRAP_SERVERS overrides it)")
    k.add_argument("--acks", choices=("0", "1", "all"), default="all",
                   help="all = idempotent producer: no duplicates, order kept on retries")
    k.add_argument("--linger-ms", type=_non_negative(int), default=20, metavar="MS",
                   help="wait up to MS ms to fill a batch")
    k.add_argument("--batch-size", type=_positive_int, default=256 * 1024, metavar="BYTES",
                   help="per-partition batch size")
    k.add_argument("--compression", choices=("none", "gzip", "snappy", "lz4", "zstd"), default="zstd",
                   help="batch compression (lz4 and snappy need libraries that are not installed)")
    k.add_argument("--wait-for-broker", type=_non_negative(float), default=60.0, metavar="S",
                   help="keep retrying an unreachable broker for S seconds before failing")
    return parser


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


def resolve(args, settings, environ=os.environ, now_ms=None):
    """Options -> (reference messages, events, pacer speed or None, wall duration or None, topics, specs).

    Pure apart from reading the wall clock in wall-clock mode (now_ms, injectable for tests)."""
    topics = Topics(args.topic, args.injected_topic, args.reference_topic)
    shard = args.shard or shard_from_env(environ) or (0, 1)
    seed = settings.generator.seed if args.seed is None else args.seed

    if args.replay:
        if not os.path.isfile(args.replay):
            raise UsageError(f"replay file not found: {args.replay}")
        events = replay_events(args.replay, seed, topics, shard)
        return [], events, (args.speed or None), None, topics, []

    tickers = synthetic_tickers(args.universe) if args.universe else \
        [check_ticker(t.strip()) for t in args.symbols.split(",") if t.strip()]
    if not tickers:
        raise UsageError("no symbols given")
    universe = build_universe(tickers, seed)

    clock = args.clock
    if clock == "auto":
        clock = "sim" if (args.seed is not None or args.start_time is not None) else "wall"
    if clock == "wall":
        if args.start_time is not None:
            raise UsageError("--start-time needs the simulated clock (drop --clock wall)")
        if args.event_rate is not None:
            raise UsageError("--event-rate applies to the simulated clock only")
        start_ms = now_ms() if now_ms else int(time.time() * 1000)
        # execute() paces from this instant: a trade leaves when the wall clock reaches its event time.
        args.wall_start_ms = start_ms
        event_rate = args.rate or float(settings.generator.rate)
    else:
        start_ms = args.start_time if args.start_time is not None else parse_timestamp(DEFAULT_SIM_START)
        event_rate = args.event_rate or args.rate or float(settings.generator.rate)
    if event_rate <= 0:
        raise UsageError("the event rate must be positive")

    unpaced_wall = clock == "wall" and args.rate == 0
    opts = StreamOptions(
        universe=universe, seed=seed, start_ms=start_ms, event_rate=event_rate,
        run=run_token(seed, start_ms), shard=shard,
        end_offset_s=None if (args.duration is None or unpaced_wall) else args.duration,
        vol_scale=args.vol_scale,
        anomalies=AnomalyOptions(
            rate=args.anomaly_rate, every=args.anomaly_every or 0, kinds=args.anomaly_kinds,
            price_move=(args.spike_pct[0] / 100, args.spike_pct[1] / 100), volume_factor=args.volume_factor),
        disorder=DisorderOptions(late_fraction=args.late_fraction, max_delay_ms=args.max_delay_ms),
        bad=BadOptions(fraction=args.bad_fraction, kinds=args.bad_kinds),
        topics=topics,
        # As fast as possible on the wall clock: stamp each trade with the time it is made.
        event_time_of=(lambda _offset: int(time.time() * 1000)) if unpaced_wall else None,
    )
    owned = [spec for _, spec in owned_symbols(opts)]
    reference = [] if args.no_reference else \
        [(topics.reference, *reference_message(spec)) for spec in owned]
    speed = args.rate / event_rate if args.rate > 0 else None
    wall_duration = args.duration if unpaced_wall else None
    return reference, generate(opts), speed, wall_duration, topics, owned


def _say(args, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


def _summary(stats: RunStats, target: str) -> str:
    text = (f"generator: {stats.trades:,} trades ({stats.bad:,} bad), {stats.labels:,} labels, "
            f"{stats.reference:,} reference records to {target} in {stats.seconds:.1f}s "
            f"({stats.rate:,.0f} trades/s)")
    if stats.stopped_by_request:
        text += ", stopped on request"
    return text


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings()
    except ConfigError as err:
        print(f"generator: error: {err}", file=sys.stderr)
        return 2
    parser = build_parser(settings)
    args = parser.parse_args(argv)  # exits 2 with a one-line message on bad values
    try:
        code, _ = execute(args, settings)
        return code
    except UsageError as err:
        parser.error(str(err))
    except (SinkError, ReplayError) as err:
        print(f"generator: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, SinkError) else 2
    except BrokenPipeError:  # `python -m generator --output - | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("generator: interrupted", file=sys.stderr)
        return 130


def execute(args, settings, stop: StopFlag | None = None) -> tuple[int, RunStats | None]:
    """Runs the options; returns (exit code, stats). Raises UsageError, SinkError, ReplayError."""
    try:
        reference, events, speed, wall_duration, topics, owned = resolve(args, settings)
    except ValueError as err:
        if isinstance(err, ReplayError | UsageError):
            raise
        raise UsageError(str(err)) from None

    if args.reference_to_postgres and owned:
        import psycopg2

        try:
            conn = psycopg2.connect(postgres_dsn(settings), connect_timeout=10)
            try:
                written = write_symbols_to_postgres(conn, owned)
            finally:
                conn.close()
        except psycopg2.Error as err:
            raise SinkError(f"Postgres: {str(err).strip().splitlines()[0]}") from None
        _say(args, f"generator: upserted {written} symbols into Postgres")

    if stop is None:
        stop = StopFlag()
        stop.install()
    if args.output:
        sink: Sink = FileSink(args.output)
        target = "stdout" if args.output == "-" else args.output
    else:
        sink = KafkaSink(args.bootstrap_servers, acks=args.acks, linger_ms=args.linger_ms,
                         batch_size=args.batch_size, compression=args.compression,
                         wait_s=args.wait_for_broker, log=lambda text: _say(args, text))
        target = f"Kafka {args.bootstrap_servers} ({topics.trades}, {topics.injected}, {topics.reference})"
    _say(args, f"generator: writing to {target}" +
         (f", {args.rate:g} trades/s" if speed and not args.replay else "") +
         (f", replay {args.replay} at {args.speed:g}x" if args.replay else ""))

    origin = None
    if getattr(args, "wall_start_ms", None) is not None:
        origin = time.monotonic() - (time.time() - args.wall_start_ms / 1000)
    pacer = Pacer(speed, should_stop=stop, origin=origin) if speed else None
    progress = None if args.quiet or args.progress_every == 0 else \
        Progress(args.progress_every, total=args.count)
    try:
        stats = run(events, sink, trades_topic=topics.trades, injected_topic=topics.injected,
                    reference=reference, pacer=pacer, count=args.count, wall_duration_s=wall_duration,
                    progress=progress, should_stop=stop)
    finally:
        sink.close()
    stats.errors, stats.first_error = sink.errors, sink.first_error
    _say(args, _summary(stats, target))
    if stats.errors:
        print(f"generator: error: {stats.errors:,} message(s) not delivered; first: {stats.first_error}",
              file=sys.stderr)
        return 1, stats
    return 0, stats


