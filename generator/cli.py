"""Command line: `python -m generator --help`. Argument parsing only: options.py turns the options into a
run plan, run.execute() carries it out.

Exit codes: 0 done (also after Ctrl-C / SIGTERM once everything buffered was delivered), 1 failure (broker
unreachable, delivery errors, unwritable output, Postgres error), 2 bad usage (invalid option values, missing
replay file). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from marketpulse.config import ConfigError, load_settings
from marketpulse.times import parse_timestamp

from .injections import ANOMALY_KINDS, BAD_KINDS, AnomalyOptions, SurgeOptions
from .live import LIVE_SOURCES, execute_live
from .live_sources import LiveSourceError
from .options import DEFAULT_SIM_START, UsageError
from .replay import ReplayError
from .run import StopFlag, execute
from .sink import SinkError
from .stream import SHARD_ENV, parse_shard


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
    timing.add_argument("--history-minutes", type=_non_negative(float), default=0.0, metavar="M",
                        help="history first: M minutes of trades with event times from now-M min up to now, "
                             "sent as fast as Kafka takes them, then the same price paths go on live on the "
                             "wall clock at --rate (labels and injections as usual); --duration counts the "
                             "live part")
    timing.add_argument("--history-rate", type=_non_negative(float),
                        default=float(settings.demo.history_rate), metavar="R",
                        help="trades per second of event time in the history, all symbols together "
                             "([demo] history_rate)")

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
    inject.add_argument("--surge-rate", type=_non_negative(float), default=0.0, metavar="N",
                        help="volume surges with a flat price (kind volume_surge_flat): episodes per "
                             "symbol-hour of event time in which every trade is --surge-factor times its "
                             "size and on one side, the price on the model's path")
    inject.add_argument("--surge-seconds", type=_non_negative(float), default=SurgeOptions.seconds,
                        metavar="S", help="event-time length of a volume surge")
    inject.add_argument("--surge-factor", type=_range, default=SurgeOptions.factor, metavar="MIN:MAX",
                        help="a surge's trades are this many times their drawn size (one factor per episode)")
    inject.add_argument("--late-fraction", type=_fraction, default=0.0, metavar="F",
                        help="share of trades held back and emitted after later trades")
    inject.add_argument("--max-delay-ms", type=_positive_int, default=5000, metavar="MS",
                        help="a held-back trade is delayed by 1..MS ms of event time")
    inject.add_argument("--bad-fraction", type=_fraction, default=0.0, metavar="F",
                        help="share of trade messages replaced by malformed ones (each unique, each "
                             "failing marketpulse.trade.parse_trade)")
    inject.add_argument("--bad-kinds", type=_kinds(BAD_KINDS), default=BAD_KINDS, metavar="K,...",
                        help=f"from {', '.join(BAD_KINDS)}")

    source = parser.add_argument_group("source")
    source.add_argument("--source", choices=("synthetic", "replay", *LIVE_SOURCES), default=None,
                        help="synthetic: the price model (default); replay: --replay FILE; yahoo / "
                             "alphavantage: real intraday bars of --symbols, polled on the trading calendar "
                             "([live] in conf/pipeline.toml; Alpha Vantage's key from "
                             "$MARKETPULSE_ALPHAVANTAGE_API_KEY)")
    source.add_argument("--once", action="store_true",
                        help="live sources: one poll of every symbol now (also outside trading hours), "
                             "then exit")
    source.add_argument("--ignore-calendar", action="store_true",
                        help="live sources: poll whatever the trading calendar says")
    source.add_argument("--status-to-postgres", action="store_true",
                        help="live sources: record market open/closed in Postgres (market_status) for the "
                             "dashboard")

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
    out.add_argument("--metrics-port", type=_non_negative(int), default=0, metavar="PORT",
                     help="serve Prometheus /metrics on PORT (trades produced, bad records; 0 = off; "
                          "`make demo` uses [metrics] generator_target's port)")

    k = parser.add_argument_group("Kafka producer")
    k.add_argument("--bootstrap-servers", default=kafka.bootstrap_servers, metavar="HOST:PORT,...",
                   help="default from the config (MARKETPULSE_KAFKA_BOOTSTRAP_SERVERS overrides it)")
    k.add_argument("--acks", choices=("0", "1", "all"), default="all",
                   help="all = idempotent producer: no duplicates, order kept on retries")
    k.add_argument("--heartbeat-ms", type=_non_negative(int), default=int(settings.generator.heartbeat_ms),
                   metavar="MS", help="wall clock only: a watermark heartbeat to every partition of the "
                                      "trades topic every MS ms while no trade is due, so that silent "
                                      "partitions still move event time (0 = none; [generator] heartbeat_ms)")
    k.add_argument("--linger-ms", type=_non_negative(int), default=20, metavar="MS",
                   help="wait up to MS ms to fill a batch")
    k.add_argument("--batch-size", type=_positive_int, default=256 * 1024, metavar="BYTES",
                   help="per-partition batch size")
    k.add_argument("--compression", choices=("none", "gzip", "snappy", "lz4", "zstd"), default="zstd",
                   help="batch compression (lz4 and snappy need libraries that are not installed)")
    k.add_argument("--wait-for-broker", type=_non_negative(float), default=60.0, metavar="S",
                   help="keep retrying an unreachable broker for S seconds before failing")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings()
    except ConfigError as err:
        print(f"generator: error: {err}", file=sys.stderr)
        return 2
    parser = build_parser(settings)
    args = parser.parse_args(argv)  # exits 2 with a one-line message on bad values
    if args.source == "replay" and not args.replay:
        parser.error("--source replay needs --replay FILE.csv")
    if args.source in ("synthetic", *LIVE_SOURCES) and args.replay:
        parser.error(f"--replay reads a file; it does not go with --source {args.source}")
    try:
        if args.source in LIVE_SOURCES:
            stop = StopFlag()
            stop.install()
            return execute_live(args, settings, stop, os.environ)
        code, _ = execute(args, settings)
        return code
    except (LiveSourceError, ConfigError) as err:  # ConfigError: e.g. no password for --*-to-postgres
        print(f"generator: error: {err}", file=sys.stderr)
        return 1
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
