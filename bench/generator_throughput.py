"""Generator throughput to the real broker, next to Kafka's own producer perf tool at the same record size.

    .venv/bin/python bench/generator_throughput.py [--records N] [--acks all|1] [--compression zstd|...]

Steps (each printed): create a unique 4-partition topic; time the generator alone (memory sink: the cost
of making trades); time the generator to Kafka on one core (kafka-python producer, pre-serialized values,
key = symbol, delivery confirmed by flush); run org.apache.kafka.tools.ProducerPerformance with the same
number of records, the generator's average value size, and the same acks/compression/linger/batch size;
print both rates and the ratio; delete the topic.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kafka import KafkaAdminClient  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402

from generator.model import DEFAULT_SYMBOLS, build_universe, run_token  # noqa: E402
from generator.run import run  # noqa: E402
from generator.sink import KafkaSink, MemorySink  # noqa: E402
from generator.stream import StreamOptions, Topics, generate  # noqa: E402
from marketpulse.config import load_settings  # noqa: E402

START_MS = 1735828200000


def say(text: str) -> None:
    print(text, flush=True)


def stream(topic: str, seed: int = 1):
    opts = StreamOptions(universe=build_universe(list(DEFAULT_SYMBOLS), seed), seed=seed, start_ms=START_MS,
                         event_rate=1000.0, run=run_token(seed, START_MS),
                         topics=Topics(topic, topic + ".injected", topic + ".symbols"))
    return generate(opts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--acks", choices=("all", "1", "0"), default="1")
    parser.add_argument("--compression", default="zstd", choices=("none", "gzip", "zstd"))
    parser.add_argument("--linger-ms", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256 * 1024)
    args = parser.parse_args()

    # One core: the producer's sender thread shares the GIL anyway; pin the process for a fair figure.
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    bootstrap = load_settings().kafka.bootstrap_servers
    topic = f"bench.generator.{uuid.uuid4().hex[:8]}"
    say(f"broker {bootstrap}; creating topic {topic} (4 partitions)")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="bench-generator")
    admin.create_topics([NewTopic(topic, 4, 1)])
    try:
        say(f"1/3 generator alone (memory sink), {args.records:,} trades ...")
        sink = MemorySink()
        stats = run(stream(topic), sink, trades_topic=topic, injected_topic="-", count=args.records)
        sizes = [len(v) for _, _, v in sink.messages]
        record_size = round(sum(sizes) / len(sizes))
        say(f"    {stats.rate:,.0f} trades/s; average value {record_size} bytes (key ~4 bytes)")
        del sink

        say(f"2/3 generator -> Kafka (kafka-python, acks={args.acks}, {args.compression}, "
            f"linger {args.linger_ms} ms, batch {args.batch_size:,} B), {args.records:,} trades ...")
        kafka = KafkaSink(bootstrap, acks=args.acks, linger_ms=args.linger_ms, batch_size=args.batch_size,
                          compression=args.compression, wait_s=10)
        started = time.perf_counter()
        stats = run(stream(topic, seed=2), kafka, trades_topic=topic, injected_topic="-", count=args.records)
        kafka.close()
        seconds = time.perf_counter() - started
        ours = stats.trades / seconds
        say(f"    {ours:,.0f} trades/s ({stats.trades:,} in {seconds:.2f}s incl. final flush; "
            f"delivery errors {kafka.errors})")

        say("3/3 Kafka ProducerPerformance (Java client), same records/size/settings ...")
        java_rate = None
        jars = ROOT / ".deps" / "kafka"
        if not jars.is_dir():
            say(f"    skipped: {jars} missing (run the stack setup first)")
        else:
            compression = "none" if args.compression == "none" else args.compression
            cmd = ["java", "-cp", f"{jars}/*", "org.apache.kafka.tools.ProducerPerformance",
                   "--topic", topic, "--num-records", str(args.records), "--record-size", str(record_size),
                   "--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}",
                   f"acks={args.acks}", f"compression.type={compression}", f"linger.ms={args.linger_ms}",
                   f"batch.size={args.batch_size}"]
            say("    " + " ".join(cmd))
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            summary = [line for line in proc.stdout.splitlines() if "records sent" in line]
            match = re.search(r"records sent, ([\d.]+) records/sec", summary[-1]) if summary else None
            if proc.returncode != 0 or not match:
                say(f"    failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}")
            else:
                java_rate = float(match[1])
                say(f"    {summary[-1].strip()}")

        say("")
        say(f"generator (kafka-python): {ours:>12,.0f} trades/s")
        if java_rate:
            say(f"ProducerPerformance:      {java_rate:>12,.0f} records/s  (record size {record_size} B)")
            say(f"ratio generator/Java:     {ours / java_rate:>12.2f}")
        target = 30_000
        say(f"target {target:,} trades/s: {'met' if ours >= target else 'NOT met'}")
        return 0
    finally:
        admin.delete_topics([topic])
        admin.close()
        say(f"deleted topic {topic}")


if __name__ == "__main__":
    sys.exit(main())
