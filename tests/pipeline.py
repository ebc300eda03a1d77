"""Running MarketPulse's jobs in tests: seeded generator streams (to Kafka and, with the same options, to a
file that gives the exact records), hand-made trades, submitting the SQL scripts and the DataStream job to the
shared cluster against a scratch database, waiting for them, and comparing floats the way the tests agree on.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

from kafka import KafkaProducer

from marketpulse.analytics import WINDOW_METRICS_COLUMNS
from marketpulse.config import Settings
from marketpulse.trade import InvalidTrade, Trade, parse_trade
from stack.jobs import sql_job_name
from tests import support
from tests.reference import reference_windows

FLUSH_SYMBOL = "ZZFLUSH"
START_MS = 1_735_828_200_000  # the generator's seeded default start, 2025-01-02T14:30:00Z (60 s aligned)
SUBMIT_TIMEOUT = 180
RESULT_TIMEOUT = 240
DATASTREAM_JOB = support.REPO / "jobs" / "market_metrics.py"
WINDOW_COLUMNS = WINDOW_METRICS_COLUMNS
# Compared exactly; the float sums (vwap, notional, avg_price, stddev_price) to 1e-9 relative (close_enough).
EXACT_COLUMNS = set(WINDOW_COLUMNS) - {"vwap", "notional", "avg_price", "stddev_price"}


def epoch_ms(column: str) -> str:
    """SQL for a timestamptz column as epoch milliseconds."""
    return f"(EXTRACT(EPOCH FROM {column}) * 1000)::bigint AS {column}"


def close_enough(got: float | None, want: float | None, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    if got is None or want is None:
        return got is None and want is None
    return math.isclose(got, want, rel_tol=rel, abs_tol=abs_)


# --- the input stream ----------------------------------------------------------------------------------

class Stream:
    """A generated stream: what went to the topic, parsed, plus the generator's ground-truth labels."""

    def __init__(self, records_file: Path, topic: str):
        self.valid: list[Trade] = []
        self.bad = 0
        self.labels: list[dict] = []
        for line in records_file.read_bytes().splitlines():
            record_topic, _key, value = line.split(b"\t", 2)
            if record_topic.decode() != topic:
                self.labels.append(json.loads(value))
                continue
            try:
                self.valid.append(parse_trade(value))
            except InvalidTrade:
                self.bad += 1
        self.delayed_ids = {label["trade_id"] for label in self.labels if label["kind"] == "late"}
        self.symbols = sorted({trade.symbol for trade in self.valid})
        self.max_event_time = max(trade.event_time for trade in self.valid)


def generate(topic: str, injected_topic: str, tmp_path: Path, *options: str, to_kafka: bool = True) -> Stream:
    """The generator to Kafka (unless to_kafka=False: the test sends the records itself, e.g. paced), then
    the same options to a file (the exact records)."""
    common = [sys.executable, "-m", "generator", *options, "--rate", "0", "--topic", topic,
              "--injected-topic", injected_topic, "--no-reference", "--quiet"]
    if to_kafka:
        produced = subprocess.run(common, cwd=support.REPO, capture_output=True, text=True, timeout=300)
        assert produced.returncode == 0, produced.stderr
    records_file = tmp_path / f"{topic}.tsv"
    written = subprocess.run([*common, "--output", str(records_file)], cwd=support.REPO,
                             capture_output=True, text=True, timeout=300)
    assert written.returncode == 0, written.stderr
    return Stream(records_file, topic)


def send(settings: Settings, topic: str, trades: list[Trade], partition_of=None) -> None:
    """Trades as the generator writes them (key = symbol); partition_of(trade) pins a partition."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    try:
        for trade in trades:
            producer.send(topic, key=trade.symbol.encode(), value=trade.to_json().encode(),
                          partition=partition_of(trade) if partition_of else None)
        producer.flush(30)
    finally:
        producer.close()


def late_trades_for(stream: Stream) -> list[Trade]:
    """One trade per symbol in the first window of the stream: behind the watermark once it has fired."""
    return [Trade(f"LATE-{symbol}", symbol, 1.0 + index, 7, "BUY", START_MS + 1 + index)
            for index, symbol in enumerate(stream.symbols)]


def flush_trades(stream: Stream, partitions: int) -> list[Trade]:
    """One trade per partition, an hour of event time after the stream: every real window fires."""
    at = stream.max_event_time + 3_600_000
    return [Trade(f"FLUSH-{p}", FLUSH_SYMBOL, 1.0, 1, "BUY", at) for p in range(partitions)]


# --- running a script ----------------------------------------------------------------------------------

def wait_for_slots(settings: Settings, needed: int, timeout: float = 300) -> None:
    """The cluster is shared: wait until `needed` task slots are free rather than fail on submission."""
    support.wait_for(lambda: support.flink_rest(settings, "/overview")["slots-available"] >= needed,
                     timeout, f"{needed} free task slots on {settings.flink.rest_url}", interval=2)


def submit_sql(settings: Settings, scratch: Settings, topic: str, script: str,
               injected_topic: str | None = None, anomalies_topic: str | None = None,
               timeout: float = SUBMIT_TIMEOUT) -> str:
    """Runs `python -m stack sql --gateway SCRIPT` (through the stack's SQL Gateway: no sql-client JVM per
    job) against the scratch database and topic (and ground-truth topic, and the anomalies topic the
    indicators' alert rules go to, when given); returns the job id once the job (found on the REST API by
    its pipeline.name) is running."""
    topics = {"kafka_trades_topic": topic}
    if injected_topic:
        topics["kafka_injected_topic"] = injected_topic
    if anomalies_topic:
        topics["kafka_anomalies_topic"] = anomalies_topic
    name = sql_job_name(support.REPO / script)
    wait_for_slots(settings, 1)
    before = {job["jid"] for job in support.flink_jobs(settings)}
    result = subprocess.run([sys.executable, "-m", "stack", "sql", "--gateway", script], cwd=support.REPO,
                            env=support.env_for(scratch, **topics),
                            capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "[ERROR]" not in output, output[-5000:]
    printed = re.findall(r"Job ID: ([0-9a-f]{32})", output)

    def ours():
        found = [job for job in support.flink_jobs(settings)
                 if job["name"] == name and job["jid"] not in before]
        return found if len(found) == 1 else None

    try:
        job = support.wait_for(ours, 30, f"job {name!r} on {settings.flink.rest_url}")[0]
    except AssertionError:
        for job_id in printed:
            support.cancel_job(settings, job_id)
        raise
    assert printed == [job["jid"]], f"sql-client printed {printed}, REST has {job['jid']}"
    return wait_running(settings, job["jid"])


def wait_running(settings: Settings, job_id: str) -> str:
    """Waits until the job runs; cancels it and fails if it does not (e.g. no free slot)."""
    def running():
        state = support.flink_rest(settings, f"/jobs/{job_id}")["state"]
        if state in ("FAILED", "FAILING", "RESTARTING", "CANCELED", "FINISHED"):
            raise AssertionError(f"job {job_id} is {state}:\n{support.job_exceptions(settings, job_id)}")
        return state == "RUNNING"

    try:
        support.wait_for(running, 60, f"job {job_id} running")
    except AssertionError:
        support.cancel_job(settings, job_id)
        raise
    return job_id


def assert_healthy(settings: Settings, job_id: str) -> None:
    state = support.flink_rest(settings, f"/jobs/{job_id}")["state"]
    assert state == "RUNNING", f"job {job_id} is {state}:\n{support.job_exceptions(settings, job_id)}"


def reference_for(trades: list[Trade], sizes: tuple[int, ...]) -> dict[tuple, dict]:
    return {(row["symbol"], size, row["window_start"]): row
            for size in sizes for row in reference_windows(trades, size)}


def submit_datastream(settings, scratch, topic: str, anomalies_topic: str, job_args: tuple[str, ...] = (),
                      **overrides: str) -> str:
    """The DataStream job from the earliest offset, the way `make demo` submits it: through the REST API
    (stack/jarrun.py, PythonDriver in the JobManager, no client JVM), with `overrides` as settings
    (section_key=value) passed along as the job's --env arguments, and job_args after its own (a later
    --group-id wins)."""
    from stack import jarrun

    environ = support.env_for(scratch, kafka_trades_topic=topic, kafka_anomalies_topic=anomalies_topic,
                              **overrides)
    job_id = jarrun.run_python_job(settings, DATASTREAM_JOB, ["--start-from", "earliest", "--group-id",
                                                              f"test-engines-agree.{topic}", *job_args],
                                   environ=environ)
    return wait_running(settings, job_id)


def reference_anomaly_set(settings: Settings, trades: list[Trade]) -> dict[tuple[str, str], float]:
    """{(trade_id, rule): statistic} of the reference detector (tests/reference.py) over the trades, each
    symbol's in the given order (Kafka's: key = symbol, one partition), with the [detector] settings."""
    from collections import defaultdict

    from marketpulse.analytics import DetectorConfig
    from tests.reference import reference_anomalies

    config = DetectorConfig.from_settings(settings)
    by_symbol: dict[str, list[Trade]] = defaultdict(list)
    for trade in trades:
        by_symbol[trade.symbol].append(trade)
    return {(trade_id, rule): statistic for symbol_trades in by_symbol.values()
            for trade_id, rule, statistic in reference_anomalies(
                symbol_trades, lookback=config.lookback, warmup=config.warmup, z_threshold=config.z_threshold,
                price_jump_pct=config.price_jump_pct, volume_z_threshold=config.volume_z_threshold,
                volume_min_stddev=config.volume_min_stddev, tick_size=config.tick_size,
                min_stddev_ticks=config.min_stddev_ticks)}


def window_differences(got: dict, expected: dict) -> tuple[list, list, list]:
    """(missing, extra, different) window keys of one engine's engine_windows() against the reference:
    exact counts, volume and prices, the sums to 1e-9 relative (close_enough)."""
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    different = []
    for key in sorted(set(got) & set(expected)):
        for column in WINDOW_COLUMNS:
            want, have = expected[key][column], got[key][column]
            if not (have == want if column in EXACT_COLUMNS else close_enough(have, want)):
                different.append((key, column, have, want))
                break
    return missing, extra, different


def engine_windows(scratch: Settings, engine: str) -> dict[tuple, dict]:
    """One engine's window_metrics rows (flush trades left out), keyed by (symbol, window_seconds, start)."""
    columns = ", ".join(epoch_ms(c) if c in ("window_start", "window_end") else c for c in WINDOW_COLUMNS)
    rows = support.query(scratch, f"SELECT {columns} FROM window_metrics WHERE engine = %s AND symbol <> %s",
                         (engine, FLUSH_SYMBOL))
    return {(row[0], row[1], row[2]): dict(zip(WINDOW_COLUMNS, row, strict=True)) for row in rows}
