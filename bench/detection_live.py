"""Detection quality of the running system: a seeded stream through the real DataStream job, scored by
`make score` (marketpulse.score) — the acceptance runs of issue #13, repeatable.

    .venv/bin/python bench/detection_live.py [--rate 200] [--minutes 30] [--warmup-minutes 10] [--quiet]

One run: a fresh topic filled by the generator on its simulated clock (--seed, --rate trades per second of
event time for warm-up + minutes, every injected kind: price spikes and crashes, volume spikes, flat-price
volume surges, late and bad records; --quiet: none of them), one closing heartbeat per partition (so every
window closes), a scratch database, the DataStream job on the stack (`make up`) draining it from the earliest
offset; then `python -m marketpulse.score` over the last --minutes of event time (after the detectors'
warm-up) against the topic's ground truth. --quiet prints the detections per rule and per symbol-hour
instead: every one of them is a false alarm.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lib import drain  # noqa: E402
from marketpulse.config import load_settings  # noqa: E402
from marketpulse.times import parse_timestamp  # noqa: E402
from tests import support  # noqa: E402

START = "2025-01-02T14:30:00Z"  # the generator's simulated clock starts here (--start-time)
say = drain.say


def fill(settings, name: str, args) -> None:
    """The seeded stream into `name` (its ground truth into `name`.injected), as fast as Kafka takes it."""
    drain.create_topics(settings, {name: int(settings.kafka.trades_partitions), f"{name}.injected": 1,
                                   f"{name}.anomalies": 1})
    inject = [] if args.quiet else ["--anomaly-rate", str(args.anomaly_rate),
                                    "--surge-rate", str(args.surge_rate),
                                    "--late-fraction", "0.005", "--bad-fraction", "0.001"]
    minutes = args.warmup_minutes + args.minutes
    say(f"topic {name}: {minutes:g} min of event time at {args.rate:g} trades/s "
        f"({'no injection' if args.quiet else 'every injected kind'}), seed {args.seed}")
    subprocess.run([sys.executable, "-m", "generator", "--seed", str(args.seed), "--clock", "sim",
                    "--start-time", START, "--event-rate", str(args.rate), "--rate", "0",
                    "--duration", str(minutes * 60), *inject, "--topic", name, "--injected-topic",
                    f"{name}.injected", "--no-reference", "--progress-every", "10"], cwd=ROOT, check=True)


def detections_per_rule(scratch) -> dict[str, int]:
    rows = support.query(scratch, "SELECT rule, count(*) FROM anomalies GROUP BY rule ORDER BY rule")
    windows = support.query(scratch, "SELECT count(*) FROM window_anomalies WHERE anomalous")
    return {**{rule: n for rule, n in rows}, "multivariate (windows)": windows[0][0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0,
                        help="trades per second of event time (all symbols)")
    parser.add_argument("--minutes", type=float, default=30.0, help="scored minutes of event time")
    parser.add_argument("--warmup-minutes", type=float, default=10.0,
                        help="event time before the scored range (the multivariate detector learns "
                             "10 windows)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--anomaly-rate", type=float, default=0.005)
    parser.add_argument("--surge-rate", type=float, default=2.0,
                        help="volume_surge_flat episodes per symbol-hour")
    parser.add_argument("--quiet", action="store_true", help="no injection: count false alarms")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    settings = load_settings()
    name = f"bench.detect.{support.unique_name('t')[-8:]}"
    started = time.monotonic()
    fill(settings, name, args)
    topic = drain.prepare_topic(settings, SimpleNamespace(topic=name, partitions=None, count=0))
    scratch = support.create_scratch_database(settings, prefix="mp_detect")
    job_id = None
    try:
        from stack import jarrun

        env = support.env_for(scratch, kafka_trades_topic=name, kafka_anomalies_topic=topic.anomalies)
        program = ["--start-from", "earliest", "--group-id", support.unique_name("detect")]
        job_id = jarrun.run_python_job(settings, drain.DATASTREAM_JOB, program, environ=env)
        say(f"DataStream job {job_id} draining {topic.records:,} records")
        deadline = time.monotonic() + args.timeout
        while drain.source_read(settings, job_id) < topic.records + topic.partitions:
            if time.monotonic() > deadline:
                say("timed out before the job read the topic")
                return 1
            time.sleep(5)
        before = None
        while (now := detections_per_rule(scratch)) != before:  # until the sinks have flushed everything
            before = now
            time.sleep(5)
        say(f"drained in {time.monotonic() - started:.0f} s (fill + job)")
        start_ms = parse_timestamp(START) + int(args.warmup_minutes * 60_000)
        end_ms = start_ms + int(args.minutes * 60_000)
        if args.quiet:
            symbols = len(settings.generator.symbols)
            hours = args.minutes / 60
            counts = {rule: n for rule, n in detections_per_rule(scratch).items()}
            scored = support.query(scratch, "SELECT rule, count(*) FROM anomalies WHERE event_time >= "
                                   "to_timestamp(%s / 1000.0) AND event_time < to_timestamp(%s / 1000.0) "
                                   "GROUP BY rule", (start_ms, end_ms))
            windows = support.query(scratch, "SELECT count(*) FROM window_anomalies WHERE anomalous AND "
                                    "window_start >= to_timestamp(%s / 1000.0) AND window_start < "
                                    "to_timestamp(%s / 1000.0)", (start_ms, end_ms))[0][0]
            say(f"\nquiet run, {args.rate:g} trades/s, {symbols} symbols, {args.minutes:g} scored minutes "
                f"({symbols * hours:g} symbol-hours); whole run incl. warm-up: {counts}")
            say(f"{'rule':24s} {'false alarms':>12s} {'per symbol-hour':>16s}")
            for rule, n in sorted([*scored, ("multivariate (windows)", windows)]):
                say(f"{rule:24s} {n:12,d} {n / (symbols * hours):16.3f}")
        else:
            result = subprocess.run([sys.executable, "-m", "marketpulse.score", "--topic", f"{name}.injected",
                                     "--from", str(start_ms), "--to", str(end_ms)], cwd=ROOT,
                                    env=env, capture_output=True, text=True)
            say(f"\nmake score (python -m marketpulse.score --from {start_ms} --to {end_ms}), {args.rate:g} "
                f"trades/s, seed {args.seed}:")
            say(result.stdout.rstrip() + result.stderr.rstrip())
            if result.returncode:
                return result.returncode
        return 0
    finally:
        if job_id:
            drain.cancel(settings, job_id)
        support.drop_scratch_database(settings, scratch)
        drain.remove_topic(settings, topic)


if __name__ == "__main__":
    sys.exit(main())
