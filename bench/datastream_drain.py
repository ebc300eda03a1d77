"""Drain rate of the DataStream job (jobs/market_metrics.py) over a pre-filled topic, on the session cluster.

    .venv/bin/python bench/datastream_drain.py [--topic bench.trades] [--count 1000000] [--parallelism N]
                                               [--source-parallelism N] [--public-api SHORTCUTS]
                                               [--compare-public-api [--repeat 2]]

Steps (each printed): make sure the topic holds >= --count records (create it with [kafka] trades_partitions
partitions and fill it with `python -m generator --seed 42 --rate 0 --count N` if it is empty; a topic shared
with the SQL benchmark is reused as is); create a scratch database with the schema; submit the job from the
earliest offsets; print progress every 5 s; stop the clock when the source has emitted --count records and
the keyed operator (the Python windows + detector, the bottleneck) has taken in every valid trade; print
trades/s with the settings; cancel the job and drop the database.

--public-api event_time,key_by|all builds the job with PyFlink's public API in place of those
shortcuts of marketpulse/flink/compat.py. --compare-public-api drains the same topic with every variant in
turn (all shortcuts, each one replaced alone, all replaced), --repeat times, alternating, and prints the
table: variant, trades/s per run, median, ratio to all shortcuts (one machine, same run: the ratio is the
figure; the machine is noisy).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402

from marketpulse.config import load_settings  # noqa: E402
from marketpulse.flink.compat import PUBLIC_API_ENV, SHORTCUTS  # noqa: E402
from tests import support  # noqa: E402

JOB = "jobs/market_metrics.py"
RESULT = ROOT / ".stack" / "bench" / "datastream_drain.json"


def say(text: str) -> None:
    print(text, flush=True)


def topic_records(settings, topic: str) -> int | None:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return None
        offsets = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        starts = consumer.beginning_offsets(list(offsets))
        return sum(offsets[tp] - starts[tp] for tp in offsets)
    finally:
        consumer.close()


def ensure_topic(settings, topic: str, count: int, partitions: int) -> int:
    have = topic_records(settings, topic)
    if have is not None and have >= count:
        say(f"topic {topic}: {have} records already, reused")
        return have
    if have:
        raise SystemExit(f"topic {topic} holds {have} < {count} records; delete it or pick another --topic")
    if have is None:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
        try:
            admin.create_topics([NewTopic(topic, partitions, 1)])
        finally:
            admin.close()
        say(f"topic {topic}: created with {partitions} partitions")
    say(f"topic {topic}: filling with {count} trades (generator --seed 42 --rate 0) ...")
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "generator", "--seed", "42", "--rate", "0", "--count", str(count),
                    "--topic", topic, "--no-reference", "--injected-topic", f"{topic}.injected",
                    "--progress-every", "10"], cwd=ROOT, check=True)
    say(f"topic {topic}: filled in {time.monotonic() - started:.1f}s")
    return topic_records(settings, topic)


def vertex_counts(settings, job_id: str) -> tuple[int, int, int]:
    """(records the Kafka source emitted, valid trades the source chain sent on, trades the keyed op took)."""
    job = support.flink_rest(settings, f"/jobs/{job_id}")
    source_chain, keyed = job["vertices"][0], job["vertices"][1]
    base = f"/jobs/{job_id}/vertices/{source_chain['id']}/subtasks/metrics"
    names = [m["id"] for m in support.flink_rest(settings, base)
             if m["id"].startswith("Source_") and m["id"].endswith(".numRecordsOut")]
    emitted = 0
    if names:
        emitted = int(float(support.flink_rest(settings, f"{base}?get={names[0]}&agg=sum")[0]["sum"]))
    return emitted, source_chain["metrics"]["write-records"], keyed["metrics"]["read-records"]


def drain(settings, args, public_api: str = "") -> dict | None:
    """One drain of args.topic by a fresh job: {records, seconds, trades_per_s, window_rows}, or None when it
    failed (printed)."""
    anomalies_topic = f"{args.topic}.anomalies"
    scratch = support.create_scratch_database(settings, prefix="mp_bench")
    job_id = None
    try:
        env = support.env_for(scratch, kafka_trades_topic=args.topic,
                              kafka_anomalies_topic=anomalies_topic)
        if public_api:
            env[PUBLIC_API_ENV] = public_api
        extra = []
        if args.parallelism:
            extra += ["--parallelism", str(args.parallelism)]
        if args.source_parallelism:
            extra += ["--source-parallelism", str(args.source_parallelism)]
        result = support.flink_run("-d", "-py", JOB, "--start-from", "earliest",
                                   "--group-id", support.unique_name("bench"), *extra, env=env)
        if result.returncode != 0:
            say(result.stdout[-2000:] + result.stderr[-2000:])
            return None
        say(next((line for line in result.stdout.splitlines() if line.startswith("market_metrics:")), ""))
        job_id = support.job_id_from_output(result.stdout)
        support.wait_for(lambda: all(v["status"] == "RUNNING" for v in
                                     support.flink_rest(settings, f"/jobs/{job_id}")["vertices"]),
                         180, "all tasks running")
        started = time.monotonic()
        say(f"job {job_id} running ({public_api or 'all shortcuts'}); draining {args.count} records of "
            f"{args.topic}")
        deadline = started + args.timeout
        last_print = started
        while True:
            state = support.flink_rest(settings, f"/jobs/{job_id}")["state"]
            if state != "RUNNING":
                say(f"job {state}: {support.job_exceptions(settings, job_id)}")
                return None
            emitted, valid, processed = vertex_counts(settings, job_id)
            now = time.monotonic()
            if emitted >= args.count and processed >= valid > 0:
                break
            if now - last_print >= 5:
                say(f"  {now - started:6.1f}s  source {emitted:>9}  keyed operator {processed:>9}  "
                    f"({processed / (now - started):,.0f} trades/s so far)")
                last_print = now
            if now > deadline:
                say("timed out")
                return None
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        say(f"drained {emitted} records ({processed} valid trades through the keyed operator) "
            f"in {elapsed:.1f}s: {emitted / elapsed:,.0f} records/s")
        windows = support.query(scratch, "SELECT count(*) FROM window_metrics")[0][0]
        return {"records": emitted, "seconds": elapsed, "trades_per_s": emitted / elapsed,
                "window_rows": windows}
    finally:
        if job_id:
            support.cancel_job(settings, job_id)
        support.drop_scratch_database(settings, scratch)


def compare_public_api(settings, args) -> int:
    """Every variant, args.repeat times, alternating; the table of rates and ratios."""
    variants = ["", *SHORTCUTS, "all"]
    rates: dict[str, list[float]] = {variant: [] for variant in variants}
    for round_number in range(1, args.repeat + 1):
        for variant in variants:
            say(f"== round {round_number}: {variant or 'all shortcuts'}")
            run = drain(settings, args, variant)
            if run is None:
                return 1
            rates[variant].append(run["trades_per_s"])
    base = statistics.median(rates[""])
    say(f"\n{'variant (public API for)':26s} {'trades/s per run':>24s} {'median':>8s} {'vs shortcuts':>12s}")
    for variant in variants:
        median = statistics.median(rates[variant])
        runs = ", ".join(f"{rate:,.0f}" for rate in rates[variant])
        say(f"{variant or '(none: all shortcuts)':26s} {runs:>24s} {median:8,.0f} {median / base:12.3f}")
    return 0


def main() -> int:
    settings = load_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", default="bench.trades",
                        help="pre-filled trades topic (default bench.trades)")
    parser.add_argument("--count", type=int, default=1_000_000, help="records to drain (default 1000000)")
    parser.add_argument("--partitions", type=int, default=int(settings.kafka.trades_partitions),
                        help="partitions when the topic is created")
    parser.add_argument("--parallelism", type=int, default=None, help="the job's --parallelism")
    parser.add_argument("--source-parallelism", type=int, default=None, help="the job's --source-parallelism")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--public-api", default="", metavar="SHORTCUTS",
                        help="event_time,key_by or all: PyFlink's public API instead")
    parser.add_argument("--compare-public-api", action="store_true",
                        help="drain with every variant in turn and print the table")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of --compare-public-api")
    args = parser.parse_args()

    ensure_topic(settings, args.topic, args.count, args.partitions)
    anomalies_topic = f"{args.topic}.anomalies"
    if topic_records(settings, anomalies_topic) is None:  # the broker does not auto-create topics
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
        try:
            admin.create_topics([NewTopic(anomalies_topic, 1, 1)])
        finally:
            admin.close()
    if args.compare_public_api:
        return compare_public_api(settings, args)
    run = drain(settings, args, args.public_api)
    if run is None:
        return 1
    flink = settings.flink
    say(f"settings: parallelism {args.parallelism or flink.parallelism}, source subtasks "
        f"{args.source_parallelism or 'one per partition'}, "
        f"checkpoint {flink.checkpoint_interval_seconds}s, "
        f"windows {settings.windows.size_seconds}s+{settings.windows.short_size_seconds}s, "
        f"window rows written {run['window_rows']}"
        + (f", public API for {args.public_api}" if args.public_api else ""))
    # bench/sql_drain.py prints this beside its own figure.
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps({
        "engine": "datastream", "topic": args.topic, "records": run["records"],
        "seconds": round(run["seconds"], 1), "trades_per_s": run["trades_per_s"],
        "parallelism": args.parallelism or flink.parallelism,
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
