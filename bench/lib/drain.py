"""The drain benchmarks' harness: one topic, then each engine in turn on it, measured alike (bench/drain.py).

Steps, each printed:
1. the topic: a fresh one (`bench.drain.<id>`, [kafka] trades_partitions partitions) filled by the seeded
   generator (`python -m generator --seed 42 --rate 0 --count N`: valid trades in event-time order per
   partition, so no trade is late and every engine writes the same windows), then one watermark heartbeat per
   partition past the last window's end (figures.closing_heartbeat_ms), so that the engines close every
   window; a finite topic would otherwise leave the last ones open for ever. --topic reuses a topic (the
   heartbeats are appended when its partitions do not end with one yet);
2. the plain consumer (bench/plain_consumer.py --worker, its own process): the baseline;
3. the DataStream job (jobs/market_metrics.py, submitted as `make demo` does) and/or the SQL job
   (--sql-script, default sql/window_metrics.sql, through the SQL Gateway), each from the earliest offsets;
4. the table: engine, records, seconds, rate, ratio to the plain consumer.

Every engine writes into its own scratch database (the schema applied, dropped afterwards). Its clock starts
at PostgreSQL's clock_timestamp() read just before it is started, and stops at the largest landed_at of its
window rows (the server's clock when each row arrived) once its output is complete: as many rows of
[windows] size_seconds as the plain consumer wrote, and no new row of any size for SETTLE_S (figures.
Completion). The progress lines and the settle wait are not timed. Every engine's windows of that size are
then compared with the plain consumer's (tests/pipeline.window_differences): the same output, or the run
says how it differs.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from bench.lib.figures import BASELINE, Completion, Figure, closing_heartbeat_ms, table
from marketpulse.config import Settings, load_settings
from marketpulse.flink.compat import PUBLIC_API_ENV
from marketpulse.trade import heartbeat_time, heartbeat_value, parse_trade
from tests import support
from tests.pipeline import engine_windows, window_differences

ROOT = Path(__file__).resolve().parents[2]
PLAIN = ROOT / "bench" / "plain_consumer.py"
DATASTREAM_JOB = ROOT / "jobs" / "market_metrics.py"
ENGINES = ("datastream", "sql")
# The window sinks flush at least every second (marketpulse/sqltemplate.py): five seconds without a new row,
# once the expected rows are in, leave room for a slow flush without stretching the run.
SETTLE_S = 5.0
# No new row for this long: the job is stuck (the DataStream job's first rows come ~30 s after submission).
STALL_S = 300.0
# No new row for this long after the source read the whole topic: the output is final, even if short.
FINAL_S = 30.0
POLL_S = 1.0
PROGRESS_S = 5.0
FAILED = ("FAILED", "FAILING", "RESTARTING", "CANCELED", "CANCELLING", "FINISHED", "SUSPENDED")


def say(text: str) -> None:
    print(text, flush=True)


@dataclass(frozen=True)
class Topic:
    name: str
    records: int  # what the engines drain: every record but the closing heartbeats
    partitions: int
    fresh: bool  # made by this run: deleted at the end unless --keep-topic

    @property
    def anomalies(self) -> str:
        return f"{self.name}.anomalies"

    @property
    def injected(self) -> str:
        return f"{self.name}.injected"


@dataclass
class Run:
    figure: Figure
    rows: dict[int, int]  # window_seconds -> rows written
    note: str
    windows: dict[tuple, dict]  # its windows of [windows] size_seconds (tests/pipeline.engine_windows)
    placement: dict[str, dict[str, int]] | None = None  # a job's {vertex name: {TaskManager id: subtasks}}


# --- the topic ------------------------------------------------------------------------------------------

def partition_ends(settings: Settings, topic: str) -> dict[int, tuple[int, int]] | None:
    """{partition: (beginning, end offset)}, or None when the topic does not exist."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, client_id="bench-drain")
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return None
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        begins, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        return {tp.partition: (begins[tp], ends[tp]) for tp in tps}
    finally:
        consumer.close()


def last_values(settings: Settings, topic: str, offsets: dict[int, tuple[int, int]]) -> dict[int, bytes]:
    """The last value of every non-empty partition."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, client_id="bench-drain",
                             group_id=None, enable_auto_commit=False)
    try:
        wanted = {TopicPartition(topic, p): end - 1 for p, (begin, end) in offsets.items() if end > begin}
        consumer.assign(list(wanted))
        for tp, offset in wanted.items():
            consumer.seek(tp, offset)
        found: dict[int, bytes] = {}
        deadline = time.monotonic() + 60
        while len(found) < len(wanted) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=1000).items():
                for record in records:
                    if record.offset == wanted[tp]:
                        found[tp.partition] = record.value
        if len(found) < len(wanted):
            raise SystemExit(f"topic {topic}: could not read the last record of every partition")
        return found
    finally:
        consumer.close()


def create_topics(settings: Settings, names: dict[str, int]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers, client_id="bench-drain")
    try:
        missing = [NewTopic(name, partitions, int(settings.kafka.replication_factor))
                   for name, partitions in names.items()
                   if partition_ends(settings, name) is None]
        if missing:
            admin.create_topics(missing)
            support.wait_for(lambda: all(partition_ends(settings, t.name) for t in missing), 30,
                             f"topics {', '.join(t.name for t in missing)}")
    finally:
        admin.close()


def prepare_topic(settings: Settings, args) -> Topic:
    fresh = args.topic is None
    name = args.topic or f"bench.drain.{uuid.uuid4().hex[:8]}"
    offsets = partition_ends(settings, name)
    if offsets is None:
        create_topics(settings, {name: args.partitions})
        say(f"topic {name}: created with {args.partitions} partitions; filling it with {args.count:,} trades "
            f"(generator --seed 42 --rate 0) ...")
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "generator", "--seed", "42", "--rate", "0",
                        "--count", str(args.count), "--topic", name, "--no-reference",
                        "--injected-topic", f"{name}.injected", "--progress-every", "5"],
                       cwd=ROOT, check=True)
        say(f"topic {name}: filled in {time.monotonic() - started:.1f} s")
        offsets = partition_ends(settings, name)
    create_topics(settings, {f"{name}.anomalies": 1, f"{name}.injected": 1})
    lasts = last_values(settings, name, offsets)
    if not all(heartbeat_time(value) is not None for value in lasts.values()):
        windows = settings.windows
        max_event = max(parse_trade(value).event_time for value in lasts.values()
                        if heartbeat_time(value) is None)
        closing = closing_heartbeat_ms(max_event, (windows.size_seconds, windows.short_size_seconds),
                                       int(windows.max_out_of_orderness_ms),
                                       int(float(windows.grace_seconds) * 1000))
        producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
        try:
            for partition in offsets:
                producer.send(name, value=heartbeat_value(closing), partition=partition)
            producer.flush(30)
        finally:
            producer.close()
        say(f"topic {name}: a closing heartbeat at event time {closing} (last trade {max_event}) appended to "
            f"each of its {len(offsets)} partitions")
        offsets = partition_ends(settings, name)
    records = sum(end - begin for begin, end in offsets.values()) - len(offsets)
    if not fresh and records < args.count:
        say(f"topic {name}: {records:,} records (fewer than --count {args.count:,}), drained as they are")
    say(f"topic {name}: {records:,} records + {len(offsets)} closing heartbeats")
    return Topic(name, records, len(offsets), fresh)


def remove_topic(settings: Settings, topic: Topic) -> None:
    for name in (topic.name, topic.anomalies, topic.injected):
        support.delete_topic(settings, name)
    say(f"deleted topics {topic.name}, {topic.anomalies}, {topic.injected}")


# --- measuring -------------------------------------------------------------------------------------------

def db_now(scratch: Settings):
    return support.query(scratch, "SELECT clock_timestamp()")[0][0]


def window_rows(scratch: Settings, engine: str) -> dict[int, int]:
    return dict(support.query(scratch, "SELECT window_seconds, count(*) FROM window_metrics "
                                       "WHERE engine = %s GROUP BY window_seconds", (engine,)))


def last_landed(scratch: Settings, engine: str):
    return support.query(scratch, "SELECT max(landed_at) FROM window_metrics WHERE engine = %s",
                         (engine,))[0][0]


def windows_of_size(windows: dict[tuple, dict], size: int) -> dict[tuple, dict]:
    return {key: row for key, row in windows.items() if key[1] == size}


def agreement(run_windows: dict[tuple, dict], baseline: dict[tuple, dict], size: int) -> str:
    missing, extra, different = window_differences(run_windows, baseline)
    if not (missing or extra or different):
        return f"its {len(baseline):,} windows of {size} s equal the plain consumer's"
    first = (missing or extra or different)[0]
    return (f"its {size} s windows DIFFER from the plain consumer's: {len(missing)} missing, "
            f"{len(extra)} extra, {len(different)} different (first: {first})")


def source_read(settings: Settings, job_id: str) -> int:
    try:
        return support.vertex_metric_sum(settings, job_id, ".numRecordsOut", prefix="Source")
    except Exception:  # metrics not there yet (the job is still being deployed)
        return 0


def follow(settings: Settings, scratch: Settings, engine: str, job_id: str, start, topic: Topic,
           baseline: Run, timeout: float, submitted_in: float) -> Run | None:
    """Waits until the job's output is complete (figures.Completion); its Run, or None when it failed."""
    size = int(settings.windows.size_seconds)
    completion = Completion(len(baseline.windows), SETTLE_S, STALL_S, FINAL_S)
    read = 0
    began = last_print = time.monotonic()
    running_after = None
    while True:
        try:
            job = support.flink_rest(settings, f"/jobs/{job_id}")
        except Exception as err:  # a busy JobManager can miss an answer: the next poll asks again
            job = {"state": f"unknown ({err})", "vertices": []}
        now = time.monotonic()
        if job["state"] in FAILED:
            say(f"{engine}: job {job_id} is {job['state']}: {support.job_exceptions(settings, job_id)}")
            return None
        vertices = job["vertices"]
        if running_after is None and vertices and all(v["status"] == "RUNNING" for v in vertices):
            running_after = now - began
        rows = window_rows(scratch, engine)
        if now - last_print >= PROGRESS_S or read >= topic.records + topic.partitions:
            read = source_read(settings, job_id)
        verdict = completion.see(now, rows.get(size, 0), sum(rows.values()),
                                 read >= topic.records + topic.partitions)
        if now - last_print >= PROGRESS_S or verdict:
            last_print = now
            say(f"  {engine} {now - began:6.1f}s  source read {read:>10,} of "
                f"{topic.records + topic.partitions:,}  window rows {sum(rows.values()):>6,} "
                f"({rows.get(size, 0):,} of {len(baseline.windows):,} of {size} s)")
        if verdict in ("done", "incomplete"):
            break
        if verdict == "stalled" or now - began > timeout:
            say(f"{engine}: no complete output after {now - began:.0f} s ({verdict or 'timed out'})")
            return None
        time.sleep(POLL_S)
    # An incomplete output is timed to its last row too, and marked: its rate is not a drain of the topic.
    landed = last_landed(scratch, engine)
    if landed is None:
        say(f"{engine}: the source read everything, and no window row came in {FINAL_S:.0f} s")
        return None
    label = engine if verdict == "done" else f"{engine}*"
    figure = Figure.measured(label, topic.records, (landed - start).total_seconds())
    windows = windows_of_size(engine_windows(scratch, engine), size)
    running = f"{running_after:.1f} s" if running_after is not None else "(not sampled)"
    note = (f"submission {submitted_in:.1f} s, all tasks running {running} after it; "
            f"{rows.get(size, 0):,} + {rows.get(int(settings.windows.short_size_seconds), 0):,} window rows; "
            f"{agreement(windows, baseline.windows, size)}")
    if verdict != "done":
        note = f"* INCOMPLETE output (the source read everything, then no row for {FINAL_S:.0f} s); " + note
    return Run(figure, rows, note, windows)


def cancel(settings: Settings, job_id: str) -> None:
    """Cancels the job and waits until it is gone, so that it takes no CPU from the next engine."""
    support.cancel_job(settings, job_id)
    try:
        support.wait_for(lambda: support.flink_rest(settings, f"/jobs/{job_id}")["state"]
                         in ("CANCELED", "FAILED", "FINISHED"), 60, f"job {job_id} cancelled")
    except AssertionError as err:
        say(str(err))


# --- the engines -----------------------------------------------------------------------------------------

def drain_plain(settings: Settings, topic: Topic) -> Run:
    say(f"\n== plain consumer: {PLAIN.relative_to(ROOT)} --worker --topic {topic.name}")
    scratch = support.create_scratch_database(settings, prefix="mp_bench")
    try:
        start = db_now(scratch)
        result = subprocess.run([sys.executable, str(PLAIN), "--worker", "--topic", topic.name], cwd=ROOT,
                                env=support.env_for(scratch), stdout=subprocess.PIPE, text=True)
        if result.returncode != 0 or not result.stdout.strip():
            raise SystemExit(f"plain consumer failed (exit {result.returncode}): {result.stdout[-2000:]}")
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        seconds = (last_landed(scratch, BASELINE) - start).total_seconds()
        figure = Figure.measured(BASELINE, topic.records, seconds)
        size = int(settings.windows.size_seconds)
        windows = windows_of_size(engine_windows(scratch, BASELINE), size)
        note = (f"{summary['trades']:,} trades, {summary['bad']:,} bad records, {summary['heartbeats']} "
                f"heartbeats read; {summary['windows']:,} windows of {size} s written; "
                f"{summary['seconds_in_process']:.2f} s inside its process")
        say(f"  {note}")
        return Run(figure, window_rows(scratch, BASELINE), note, windows)
    finally:
        support.drop_scratch_database(settings, scratch)


def drain_datastream(settings: Settings, topic: Topic, args, baseline: Run,
                     public_api: str | None = None) -> Run | None:
    """public_api: the shortcuts to build with PyFlink's public API (default: --public-api)."""
    from stack import jarrun

    public_api = args.public_api if public_api is None else public_api
    label = f" (public API for {public_api})" if public_api else ""
    say(f"\n== datastream: {DATASTREAM_JOB.relative_to(ROOT)}{label}")
    scratch = support.create_scratch_database(settings, prefix="mp_bench")
    job_id = None
    try:
        env = support.env_for(scratch, kafka_trades_topic=topic.name, kafka_anomalies_topic=topic.anomalies)
        if public_api:
            env[PUBLIC_API_ENV] = public_api
        program = ["--start-from", "earliest", "--group-id", support.unique_name("bench")]
        if args.parallelism:
            program += ["--parallelism", str(args.parallelism)]
        start, submitting = db_now(scratch), time.monotonic()
        if settings.flink.submit_python_over_rest and jarrun.can_submit(env):
            job_id = jarrun.run_python_job(settings, DATASTREAM_JOB, program, environ=env)
            how = "REST API (PythonDriver in the JobManager)"
        else:  # what `make submit-datastream` falls back to
            result = support.flink_run("-d", "-py", str(DATASTREAM_JOB), *program, env=env)
            if result.returncode != 0:
                say(result.stdout[-2000:] + result.stderr[-2000:])
                return None
            job_id = support.job_id_from_output(result.stdout)
            how = "flink run"
        say(f"  job {job_id} submitted through the {how}; draining {topic.name}")
        run = follow(settings, scratch, "datastream", job_id, start, topic, baseline, args.timeout,
                     time.monotonic() - submitting)
        if run is not None:
            run.placement = support.job_placement(settings, job_id)
        return run
    finally:
        if job_id:
            cancel(settings, job_id)
        support.drop_scratch_database(settings, scratch)


def drain_sql(settings: Settings, topic: Topic, args, baseline: Run) -> Run | None:
    from marketpulse.sqltemplate import sql_job_name
    from stack import sqlgateway
    from stack.sql import render, run_sql_script

    script = ROOT / args.sql_script
    say(f"\n== sql: {args.sql_script}")
    scratch = support.create_scratch_database(settings, prefix="mp_bench")
    scratch.kafka.trades_topic, scratch.kafka.injected_topic = topic.name, topic.injected
    group = f"{sql_job_name(script)}.{topic.name}"  # its consumer group: from the start on a reused topic
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers, client_id="bench-drain")
    try:
        admin.delete_groups([group])
        say(f"  reset consumer group {group}")
    except Exception:  # never committed: nothing to reset
        pass
    finally:
        admin.close()
    job_ids: list[str] = []
    try:
        start, submitting = db_now(scratch), time.monotonic()
        if sqlgateway.healthy(settings):  # as `make demo` submits it: no sql-client JVM
            job_ids = sqlgateway.submit(scratch, render(script, scratch).read_text(), say=lambda _line: None)
            how = "SQL Gateway"
        else:
            result = run_sql_script(scratch, str(script), capture=True)
            job_ids = re.findall(r"Job ID: ([0-9a-f]{32})", result.stdout)
            how = "sql-client.sh -f"
        if len(job_ids) != 1:
            say(f"  expected one job from {args.sql_script}, got {job_ids}")
            return None
        say(f"  job {job_ids[0]} submitted through the {how}; draining {topic.name}")
        return follow(settings, scratch, "sql", job_ids[0], start, topic, baseline, args.timeout,
                      time.monotonic() - submitting)
    finally:
        for job_id in job_ids:
            cancel(settings, job_id)
        support.drop_scratch_database(settings, scratch)


# --- the command line ------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser, settings: Settings, engines: tuple[str, ...]) -> None:
    parser.add_argument("--topic", default=None,
                        help="drain this topic as it is (closing heartbeats appended if missing; filled with "
                             "--count trades if it does not exist) and keep it; default: a fresh topic, "
                             "deleted at the end")
    parser.add_argument("--count", "--records", type=int, default=1_000_000,
                        help="trades in a new topic (default 1000000)")
    parser.add_argument("--partitions", type=int, default=int(settings.kafka.trades_partitions),
                        help="partitions of a new topic (default [kafka] trades_partitions)")
    parser.add_argument("--keep-topic", action="store_true", help="do not delete the fresh topic")
    parser.add_argument("--timeout", type=float, default=1800, help="give up on an engine after this long")
    if "datastream" in engines:
        parser.add_argument("--parallelism", type=int, default=None,
                            help="the DataStream job's --parallelism")
        parser.add_argument("--public-api", default="", metavar="SHORTCUTS",
                            help="event_time,key_by or all: the DataStream job built with PyFlink's public "
                                 "API instead of those shortcuts (marketpulse/flink/compat.py)")
    if "sql" in engines:
        parser.add_argument("--sql-script", default="sql/window_metrics.sql",
                            help="the SQL job (default sql/window_metrics.sql: the windows, as the "
                                 "DataStream job computes them)")


def settings_line(settings: Settings, args, engines: tuple[str, ...]) -> str:
    windows, flink = settings.windows, settings.flink
    parts = [f"windows {windows.size_seconds} s (plain consumer) / {windows.size_seconds} s + "
             f"{windows.short_size_seconds} s (Flink jobs)",
             f"out-of-orderness {windows.max_out_of_orderness_ms} ms",
             f"checkpoints every {flink.checkpoint_interval_seconds} s"]
    if "datastream" in engines:
        parts.append(f"DataStream parallelism {args.parallelism or flink.parallelism}, "
                     "source subtasks one per partition"
                     + (f", public API for {args.public_api}" if args.public_api else ""))
    if "sql" in engines:
        parts.append(f"SQL job {args.sql_script}")
    return "settings: " + "; ".join(parts)


def report(runs: list[Run], topic: Topic, settings: Settings, args, engines: tuple[str, ...]) -> None:
    say(f"\ntopic {topic.name}: {topic.records:,} records in {topic.partitions} partitions; each engine from "
        f"its start until its last window row was in PostgreSQL (landed_at)")
    say(settings_line(settings, args, engines))
    for run in runs:
        say(f"  {run.figure.engine}: {run.note}")
    say("")
    for line in table([run.figure for run in runs], runs[0].figure):
        say(line)


def with_topic(settings: Settings, args, work) -> int:
    """work(topic, baseline run) on a prepared topic, after the plain consumer; the topic goes afterwards."""
    topic = prepare_topic(settings, args)
    try:
        return work(topic, drain_plain(settings, topic))
    finally:
        if topic.fresh and not args.keep_topic:
            remove_topic(settings, topic)


def parse_arguments(engines: tuple[str, ...], description: str, extra=None,
                    argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    """The settings and the arguments of a drain benchmark; extra(parser) adds a script's own options."""
    settings = load_settings()
    parser = argparse.ArgumentParser(description=description or __doc__.split("\n\n")[0])
    add_arguments(parser, settings, engines)
    if extra is not None:
        extra(parser)
    return settings, parser.parse_args(argv)


def run_engines(settings: Settings, args, engines: tuple[str, ...]) -> int:
    """The plain consumer, then `engines` in this order, on one topic; prints the table."""
    drains = {"datastream": drain_datastream, "sql": drain_sql}

    def work(topic: Topic, baseline: Run) -> int:
        runs = [baseline]
        failed = []
        for engine in engines:
            run = drains[engine](settings, topic, args, baseline)
            if run is None:
                failed.append(engine)
            else:
                runs.append(run)
        report(runs, topic, settings, args, engines)
        if failed:
            say(f"failed: {', '.join(failed)}")
        return 1 if failed else 0

    return with_topic(settings, args, work)


def main(engines: tuple[str, ...] = ENGINES, description: str = "", argv: list[str] | None = None) -> int:
    settings, args = parse_arguments(engines, description, argv=argv)
    return run_engines(settings, args, engines)
