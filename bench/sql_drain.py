"""Drain rate of the Flink SQL window job (sql/window_metrics.sql) over a pre-filled topic.

    .venv/bin/python bench/sql_drain.py [--topic bench.trades] [--records 1000000] [--timeout 1800]

Steps (each printed): make sure the topic holds at least --records trades (create it with the configured
number of partitions and fill it with the seeded generator, only when it has fewer); create a
scratch database with the schema; reset the script's consumer group so it reads from the start; submit the
script with sql-client.sh -f (the job reads the topic and writes both window sizes and late trades into the
scratch database); follow the source's record count on the Flink REST API, printing progress; the drain
rate is the slope of that count between the first and last samples taken mid-drain; cancel the job, drop
the database, print the settings and the rate (and the DataStream job's figure next to it, when
bench/datastream_drain.py has left a result file). The result goes to .stack/bench/sql_drain.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402

from marketpulse.config import load_settings, postgres_dsn  # noqa: E402
from stack.postgres import apply_schema  # noqa: E402
from stack.sql import run_sql_script  # noqa: E402

SCRIPT = "sql/window_metrics.sql"
RESULT = ROOT / ".stack" / "bench" / "sql_drain.json"
START_MS = 1_735_828_200_000  # the generator's seeded default start
EVENT_RATE = 200  # trades per second of event time when generating


def say(text: str) -> None:
    print(text, flush=True)


def rest(settings, path: str, method: str = "GET"):
    request = urllib.request.Request(settings.flink.rest_url.rstrip("/") + path, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def topic_size(bootstrap: str, topic: str) -> tuple[int, int]:
    """(records, partitions) of the topic; (0, 0) when it does not exist."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), client_id="bench-sql-drain")
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return 0, 0
        tps = [TopicPartition(topic, p) for p in partitions]
        ends, begins = consumer.end_offsets(tps), consumer.beginning_offsets(tps)
        return sum(ends[tp] - begins[tp] for tp in tps), len(tps)
    finally:
        consumer.close()


def fill(settings, topic: str, wanted: int) -> int:
    bootstrap = settings.kafka.bootstrap_servers
    have, partitions = topic_size(bootstrap, topic)
    if have >= wanted:
        say(f"topic {topic}: {have:,} records in {partitions} partitions, enough (>= {wanted:,})")
        return have
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="bench-sql-drain")
    try:
        if partitions == 0:
            partitions = settings.kafka.trades_partitions
            say(f"creating topic {topic} ({partitions} partitions)")
            admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    missing = wanted - have
    # Appending: start after what is there, so the new trades are not all late.
    start = START_MS + (have // EVENT_RATE + 3600) * 1000 if have else START_MS
    # An empty topic gets what bench/datastream_drain.py would write (seed 42), so both drain the same.
    seed = have + 1 if have else 42
    say(f"topic {topic}: {have:,} records, generating {missing:,} more (seed {seed}) ...")
    subprocess.run([sys.executable, "-m", "generator", "--seed", str(seed), "--count", str(missing),
                    "--rate", "0", "--event-rate", str(EVENT_RATE), "--start-time", str(start),
                    "--topic", topic, "--injected-topic", f"{topic}.injected", "--no-reference",
                    "--progress-every", "5"], cwd=ROOT, check=True)
    return topic_size(bootstrap, topic)[0]


def source_records(settings, job_id: str) -> int | None:
    """Records emitted by the Kafka source operator, summed over its subtasks."""
    job = rest(settings, f"/jobs/{job_id}")
    vertex = job["vertices"][0]["id"]
    names = [m["id"] for m in rest(settings, f"/jobs/{job_id}/vertices/{vertex}/subtasks/metrics")]
    wanted = [n for n in names if re.match(r"Source.*\.numRecordsOut$", n)]
    if not wanted:
        return None
    values = rest(settings, f"/jobs/{job_id}/vertices/{vertex}/subtasks/metrics?get={wanted[0]}&agg=sum")
    return int(float(values[0]["sum"])) if values else None


def datastream_figure() -> dict | None:
    if not (ROOT / "bench" / "datastream_drain.py").exists():
        return None
    for folder in (ROOT / ".stack" / "bench", ROOT / "bench", ROOT / ".stack"):
        for path in sorted(folder.glob("datastream_drain*.json")) if folder.exists() else []:
            try:
                return json.loads(path.read_text()) | {"file": str(path.relative_to(ROOT))}
            except (ValueError, OSError):
                continue
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", default="bench.trades", help="pre-filled trades topic")
    parser.add_argument("--records", type=int, default=1_000_000, help="at least this many trades")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    args = parser.parse_args()
    settings = load_settings()
    total = fill(settings, args.topic, args.records)

    scratch = copy.deepcopy(settings)
    scratch.kafka.trades_topic = args.topic
    scratch.postgres.database = f"mp_bench_{uuid.uuid4().hex[:8]}"
    with closing(psycopg2.connect(postgres_dsn(settings))) as conn:
        conn.autocommit = True
        conn.cursor().execute(f'CREATE DATABASE "{scratch.postgres.database}"')
    apply_schema(scratch)
    group = f"marketpulse-sql-window-metrics.{args.topic}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers.split(","),
                             client_id="bench-sql-drain")
    try:
        admin.delete_groups([group])
        say(f"reset consumer group {group}")
    except Exception:  # never committed: nothing to reset
        pass
    finally:
        admin.close()

    job_id = None
    try:
        say(f"submitting {SCRIPT} (database {scratch.postgres.database}) ...")
        result = run_sql_script(scratch, SCRIPT, capture=True)
        found = re.findall(r"Job ID: ([0-9a-f]{32})", result.stdout)
        if result.returncode != 0 or not found:
            say((result.stdout + result.stderr)[-3000:])
            return 1
        job_id = found[0]
        say(f"job {job_id} submitted; draining {total:,} records")
        # Flink's REST metrics refresh every few seconds: keep the (time, count) points where the count
        # changed; the rate is the slope between the first and the last point strictly inside the drain.
        points: list[tuple[float, int]] = []
        count, deadline = 0, time.monotonic() + args.timeout
        started = time.monotonic()
        while time.monotonic() < deadline:
            state = rest(settings, f"/jobs/{job_id}")["state"]
            if state not in ("RUNNING", "CREATED", "INITIALIZING"):
                exceptions = rest(settings, f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
                say(f"job is {state}: {exceptions[0]['exceptionName'] if exceptions else ''}")
                return 1
            now = time.monotonic()
            count = source_records(settings, job_id) or 0
            if count and (not points or count > points[-1][1]):
                points.append((now, count))
                say(f"  {now - started:6.1f}s {count:>12,} / {total:,} records read")
            if count >= total or (points and now - points[-1][0] > 30):
                break
            time.sleep(0.5)
        inside = [(t, c) for t, c in points if c < total]
        if len(inside) >= 2:
            (t0, c0), (t1, c1) = inside[0], inside[-1]
            rate, basis = (c1 - c0) / (t1 - t0), f"{c1 - c0:,} records in {t1 - t0:.1f} s mid-drain"
        elif points:
            rate = count / (points[-1][0] - started)
            basis = f"{count:,} records in {points[-1][0] - started:.1f} s from submission (lower bound)"
        else:
            say("no progress measured")
            return 1
        last, first = points[-1][0], started
        figures = {"records": count, "seconds": round(last - first, 1), "trades_per_s": round(rate),
                   "basis": basis,
                   "topic": args.topic, "script": SCRIPT, "parallelism": settings.flink.parallelism,
                   "window_seconds": [settings.windows.size_seconds, settings.windows.short_size_seconds],
                   "max_out_of_orderness_ms": settings.windows.max_out_of_orderness_ms,
                   "checkpoint_interval_seconds": settings.flink.checkpoint_interval_seconds}
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps(figures, indent=2) + "\n")
        say("")
        windows = settings.windows
        say(f"settings: parallelism {settings.flink.parallelism}, windows {windows.size_seconds} s + "
            f"{windows.short_size_seconds} s, out-of-orderness {windows.max_out_of_orderness_ms} ms, "
            f"checkpoints every {settings.flink.checkpoint_interval_seconds} s, topic {args.topic}")
        other = datastream_figure()
        if other and "trades_per_s" in other:
            say(f"{'engine':<12}{'trades/s':>12}{'records':>12}{'seconds':>10}")
            say(f"{'sql':<12}{rate:>12,.0f}{count:>12,}{last - first:>10.1f}   ({basis})")
            say(f"{'datastream':<12}{other['trades_per_s']:>12,.0f}{other.get('records', 0):>12,}"
                f"{other.get('seconds', 0):>10}   (from {other['file']})")
        else:
            say(f"SQL window job drain rate: {rate:,.0f} trades/s ({basis})")
        say(f"result: {RESULT.relative_to(ROOT)}")
        return 0
    finally:
        if job_id:
            try:
                rest(settings, f"/jobs/{job_id}?mode=cancel", method="PATCH")
                say(f"cancelled job {job_id}")
            except Exception as err:  # already gone
                say(f"cancel {job_id}: {err}")
        with closing(psycopg2.connect(postgres_dsn(settings))) as conn:
            conn.autocommit = True
            conn.cursor().execute(f'DROP DATABASE IF EXISTS "{scratch.postgres.database}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
