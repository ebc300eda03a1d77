"""Drain rate of the DataStream job at parallelism 1, 2 and 4 on one topic, in one run (README
"Parallelism and scaling").

    MARKETPULSE_FLINK_TASKMANAGERS=2 make up   # a cluster of two TaskManager processes (or any cluster)
    .venv/bin/python bench/scaling.py [--parallelisms 1,2,4] [--repeat 1] [--count 1000000] [--topic T]

bench/drain.py's harness (bench/lib/drain.py) with the DataStream job only: one topic of --count seeded
trades in [kafka] trades_partitions partitions, the plain consumer once (the windows every run must equal),
then jobs/market_metrics.py --parallelism P for each P in turn (--repeat rounds, alternating), each timed from
its submission until its last window row is in PostgreSQL. The source always has one subtask per partition;
P is the parallelism of the keyed operator (windows + detectors) and the sinks. Prints per run: seconds,
rate, ratio to the first parallelism's median, the check against the plain consumer's windows, and where the
keyed operator's subtasks ran (subtasks per TaskManager). Then the machine's CPU count: a parallelism above it
cannot run faster, its subtasks only take turns on the same cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.lib import drain  # noqa: E402
from tests import support  # noqa: E402

say = drain.say
KEYED = "per symbol"  # in the name of the job's keyed operator


def extra_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parallelisms", default="1,2,4",
                        help="the DataStream job's --parallelism values, comma-separated (default 1,2,4)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over the parallelisms (alternating)")


def keyed_placement(run: drain.Run, taskmanagers: list[str]) -> str:
    """'2+2': the keyed operator's subtasks on each registered TaskManager, in the order of `taskmanagers`."""
    counts = next((counts for name, counts in (run.placement or {}).items() if KEYED in name), {})
    return "+".join(str(counts.get(tm, 0)) for tm in taskmanagers)


def main() -> int:
    settings, args = drain.parse_arguments(("datastream",), __doc__.split("\n\n")[0], extra_arguments)
    parallelisms = [int(p) for p in args.parallelisms.split(",")]
    overview = support.flink_rest(settings, "/overview")
    taskmanagers = sorted(tm["id"] for tm in support.flink_rest(settings, "/taskmanagers")["taskmanagers"])
    say(f"cluster {settings.flink.rest_url}: {overview['taskmanagers']} TaskManagers, "
        f"{overview['slots-total']} slots ({overview['slots-available']} free), "
        f"{overview.get('jobs-running', 0)} jobs running; this machine has {os.cpu_count()} CPUs")
    if overview["slots-available"] < args.partitions:
        say(f"the job needs {args.partitions} free slots (one per partition): cancel other jobs first")
        return 1

    def work(topic: drain.Topic, baseline: drain.Run) -> int:
        runs: dict[int, list[drain.Run]] = {p: [] for p in parallelisms}
        failed: list[str] = []
        load_before = os.getloadavg()
        for round_ in range(args.repeat):
            for parallelism in parallelisms:
                say(f"\nround {round_ + 1}/{args.repeat}: parallelism {parallelism}")
                run = drain.drain_datastream(settings, topic, argparse.Namespace(**{**vars(args),
                                                                                 "parallelism": parallelism}),
                                             baseline)
                if run is None:  # e.g. a TaskManager starved of CPU: the other runs still count
                    failed.append(f"P={parallelism} round {round_ + 1}")
                    continue
                say(f"  {run.note}")
                say(f"  P={parallelism}: {run.figure.seconds:.2f} s, {run.figure.rate:,} trades/s")
                runs[parallelism].append(run)
        load_after = os.getloadavg()
        if not runs[parallelisms[0]]:
            say(f"no complete run at P={parallelisms[0]}, nothing to compare with")
            return 1
        base = statistics.median(run.figure.rate for run in runs[parallelisms[0]])
        say(f"\ntopic {topic.name}: {topic.records:,} records in {topic.partitions} partitions "
            f"({topic.partitions} source subtasks); plain consumer {baseline.figure.rate:,}/s")
        say(drain.settings_line(settings, argparse.Namespace(**{**vars(args), "parallelism": "P"}),
                                ("datastream",)))
        say(f"cluster: {len(taskmanagers)} TaskManager(s) {', '.join(taskmanagers)}; {os.cpu_count()} CPUs; "
            f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
        first = f"vs P={parallelisms[0]}"
        say(f"{'P':>3} {'seconds per run':>20} {'trades/s per run':>22} {'median/s':>9} {first:>7}"
            f" {'vs plain':>9}  keyed subtasks per TM  output")
        for parallelism in [p for p in parallelisms if runs[p]]:
            figures = [run.figure for run in runs[parallelism]]
            median = statistics.median(figure.rate for figure in figures)
            equal = all("equal the plain consumer's" in run.note for run in runs[parallelism])
            say(f"{parallelism:>3} {', '.join(f'{f.seconds:.2f}' for f in figures):>20} "
                f"{', '.join(f'{f.rate:,}' for f in figures):>22} {median:>9,.0f} {median / base:>7.2f} "
                f"{median / baseline.figure.rate:>9.3f}  "
                f"{' / '.join(keyed_placement(run, taskmanagers) for run in runs[parallelism]):<22} "
                f"{'windows equal' if equal else 'windows DIFFER (see the notes)'}")
        if max(parallelisms) > (os.cpu_count() or 1):
            say(f"caveat: {os.cpu_count()} CPUs run every TaskManager, Kafka, PostgreSQL and the Python "
                "workers here: a parallelism above that cannot scale, its subtasks take turns on the same "
                "cores")
        if failed:
            say(f"failed runs (left out): {', '.join(failed)}")
        return 1 if failed else 0

    return drain.with_topic(settings, args, work)


if __name__ == "__main__":
    sys.exit(main())
