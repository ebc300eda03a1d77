"""Drain rate of the DataStream job (jobs/market_metrics.py), beside the plain consumer's on the same topic.

    .venv/bin/python bench/datastream_drain.py [--count 1000000] [--topic T [--keep-topic]] [--parallelism N]
                                               [--public-api SHORTCUTS]
                                               [--compare-public-api [--repeat 2]]

bench/drain.py for the DataStream job alone: the topic, then the plain consumer (bench/plain_consumer.py) and
the job on it, each timed from its start (the job: its submission) until its last window row is in
PostgreSQL; prints engine, records, seconds, rate and the ratio to the plain consumer, all measured in this
run (bench/lib/drain.py).

--public-api event_time,key_by|all builds the job with PyFlink's public API in place of those
shortcuts of marketpulse/flink/compat.py. --compare-public-api drains the same topic with every variant in
turn (all shortcuts, each one replaced alone, all replaced), --repeat times, alternating, and prints the
table: variant, trades/s per run, median, ratio to all shortcuts and to the plain consumer (one machine,
same run: the ratios are the figures; the machine is noisy).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.lib import drain  # noqa: E402
from bench.lib.figures import table  # noqa: E402
from marketpulse.flink.compat import SHORTCUTS  # noqa: E402

say = drain.say


def compare_public_api(settings, args) -> int:
    """Every variant, args.repeat times, alternating; the table of rates and ratios."""
    variants = ["", *SHORTCUTS, "all"]

    def work(topic, baseline) -> int:
        rates: dict[str, list[int]] = {variant: [] for variant in variants}
        incomplete: set[str] = set()
        for round_ in range(args.repeat):
            for variant in variants:
                say(f"\nround {round_ + 1}/{args.repeat}, public API for: {variant or '(none)'}")
                run = drain.drain_datastream(settings, topic, args, baseline, variant)
                if run is None:
                    return 1
                say(f"  {run.note}")
                say(table([run.figure], baseline.figure)[1])
                rates[variant].append(run.figure.rate)
                if run.figure.engine.endswith("*"):
                    incomplete.add(variant)
        base = statistics.median(rates[""])
        say(f"\ntopic {topic.name}: {topic.records:,} records; plain consumer {baseline.figure.rate:,}/s "
            f"({baseline.figure.seconds:.2f} s)")
        say(f"{'variant (public API for)':26s} {'trades/s per run':>24s} {'median':>8s} "
            f"{'vs shortcuts':>12s} {'vs plain':>9s}")
        for variant in variants:
            median = statistics.median(rates[variant])
            runs = ", ".join(f"{rate:,}" for rate in rates[variant]) + ("*" if variant in incomplete else "")
            say(f"{variant or '(none: all shortcuts)':26s} {runs:>24s} {median:8,.0f} {median / base:12.3f} "
                f"{median / baseline.figure.rate:9.3f}")
        if incomplete:
            say("* incomplete output in a run: fewer windows than the plain consumer's (see its note)")
        return 0

    return drain.with_topic(settings, args, work)


def extra_arguments(parser) -> None:
    parser.add_argument("--compare-public-api", action="store_true",
                        help="drain with every variant in turn and print the table")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of --compare-public-api")


def main() -> int:
    settings, args = drain.parse_arguments(("datastream",), __doc__.split("\n\n")[0], extra_arguments)
    if args.compare_public_api:
        return compare_public_api(settings, args)
    return drain.run_engines(settings, args, ("datastream",))


if __name__ == "__main__":
    sys.exit(main())
