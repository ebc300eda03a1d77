"""The DataStream job (jobs/market_metrics.py) on the real cluster, Kafka and a scratch Postgres database.

The generator writes a seeded stream to a unique 4-partition topic; the same options with --output give the
exact records for the reference (tests/reference.py). How the test ends the stream: after the generator, it
produces one "flush" trade per symbol (key = symbol, so into that symbol's partition) 10 minutes of event time
after the last trade. They move every partition's watermark past the last window, so every window and every
buffered trade is released; they are themselves never released (nothing comes after them) and are left out
of every assertion.

Which trades are late is decided without looking at the job's output, by the watermark rule: the generator
holds trades back by at most the watermark's out-of-orderness bound (--max-delay-ms), so every one of them is
ahead of its own partition's watermark, hence of the operator's (the minimum over partitions): none may be
late. The only late trades are the ones the test sends behind the flush trades on purpose, and late_trades
must hold exactly those. The reference is computed from every other good trade.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from dashboard.app import create_app
from marketpulse.analytics import WINDOW_METRICS_COLUMNS, DetectorConfig
from marketpulse.analytics.detector import PRICE_ZSCORE
from marketpulse.analytics.scoring import ANY, score
from marketpulse.kafka_lag import LagReader
from marketpulse.trade import InvalidTrade, Trade, parse_trade
from stack.redeploy import stop_with_savepoint
from tests import support
from tests.reference import reference_anomalies, reference_windows
from tests.support import vertex_metric_sum

pytestmark = pytest.mark.integration

JOB = "jobs/market_metrics.py"
# Partitions of the test topics = source subtasks = slots the job takes on the shared 8-slot cluster.
PARTITIONS = 2
# Held-back trades are delayed by at most the out-of-orderness bound (2 s): never late (module docstring).
MAX_DELAY_MS = 2000
GENERATOR_OPTIONS = ["--seed", "20251121", "--count", "20000", "--rate", "0", "--anomaly-rate", "0.005",
                     "--late-fraction", "0.02", "--max-delay-ms", str(MAX_DELAY_MS),
                     "--bad-fraction", "0.005", "--no-reference", "--quiet"]
FLUSH_AFTER_MS = 600_000
WINDOW_COLUMNS = WINDOW_METRICS_COLUMNS


# --- the stream ----------------------------------------------------------------------------------------

class Stream:
    """The generator's file output: trade messages in order, labels, good trades, bad payloads."""

    def __init__(self, path: Path):
        self.messages: list[tuple[bytes, bytes]] = []
        self.labels: list[dict] = []
        for line in path.read_text().splitlines():
            topic, key, value = line.split("\t", 2)
            if topic == "trades":
                self.messages.append((key.encode(), value.encode()))
            elif topic == "trades.injected":
                self.labels.append(json.loads(value))
        self.good: list[Trade] = []
        self.bad: list[str] = []
        for _, value in self.messages:
            try:
                self.good.append(parse_trade(value))
            except InvalidTrade:
                self.bad.append(value.decode())
        self.by_id = {trade.trade_id: trade for trade in self.good}

    def ids(self, *kinds: str) -> set[str]:
        return {label["trade_id"] for label in self.labels if label["kind"] in kinds}

    def flush_trades(self) -> list[Trade]:
        last = max(trade.event_time for trade in self.good)
        return [Trade(f"{symbol}-flush", symbol, 1.0, 1, "BUY", last + FLUSH_AFTER_MS)
                for symbol in sorted({trade.symbol for trade in self.good})]

    def flush_messages(self) -> list[tuple[bytes, bytes]]:
        return [(trade.symbol.encode(), trade.to_json().encode()) for trade in self.flush_trades()]


def generate_file(tmp_path: Path) -> Stream:
    path = tmp_path / "stream.tsv"
    subprocess.run([sys.executable, "-m", "generator", *GENERATOR_OPTIONS, "--output", str(path)],
                   cwd=support.REPO, check=True, timeout=300)
    return Stream(path)


def generate_to_kafka(settings, topic: str, injected_topic: str) -> None:
    subprocess.run([sys.executable, "-m", "generator", *GENERATOR_OPTIONS, "--topic", topic,
                    "--injected-topic", injected_topic,
                    "--bootstrap-servers", settings.kafka.bootstrap_servers],
                   cwd=support.REPO, check=True, timeout=300)


# --- the job -------------------------------------------------------------------------------------------

def submit(scratch, topic: str, anomalies_topic: str, *extra: str, checkpoint_seconds: int = 10,
           job_args: tuple[str, ...] = (), **overrides) -> str:
    """`flink run EXTRA -d -py JOB ... JOB_ARGS`: extra are options of `flink run` (e.g. -s), job_args of
    the job, overrides more settings (section_key=value)."""
    env = support.env_for(scratch, kafka_trades_topic=topic, kafka_anomalies_topic=anomalies_topic,
                          flink_checkpoint_interval_seconds=checkpoint_seconds, **overrides)
    result = support.flink_run(*extra, "-d", "-py", JOB, "--start-from", "earliest",
                               "--group-id", f"test-{topic}", *job_args, env=env)
    assert result.returncode == 0, f"flink run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return wait_running_all(scratch, support.job_id_from_output(result.stdout))


def wait_running_all(settings, job_id: str) -> str:
    try:
        support.wait_for(lambda: all(vertex["status"] == "RUNNING" for vertex in
                                     support.flink_rest(settings, f"/jobs/{job_id}")["vertices"]),
                         120, f"all tasks of job {job_id} running (free slots?)")
    except AssertionError:
        support.cancel_job(settings, job_id)
        raise
    return job_id


def job_state(settings, job_id: str) -> str:
    return support.flink_rest(settings, f"/jobs/{job_id}")["state"]


def table_counts(settings) -> tuple[int, ...]:
    return tuple(support.query(settings, f"SELECT count(*) FROM {table}")[0][0]
                 for table in ("window_metrics", "anomalies", "late_trades", "dead_letters"))


def late_ids(settings) -> set[str]:
    return {row[0] for row in support.query(settings, "SELECT trade_id FROM late_trades")}


def expected_window_count(stream: Stream, settings) -> int:
    """(symbol, size, window) groups of the good trades (all on time); the flush trades' windows never
    close."""
    return len({(trade.symbol, size, trade.event_time // (size * 1000)) for trade in stream.good
                for size in (60, 10)})


def wait_until_drained(settings, stream: Stream, job_id: str, timeout: float = 300) -> tuple[int, ...]:
    """Until the windows of every on-time trade are in and nothing has changed for 3 s."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        assert job_state(settings, job_id) == "RUNNING", support.job_exceptions(settings, job_id)
        counts = table_counts(settings)
        if counts != last:
            last, since = counts, time.monotonic()
        elif (time.monotonic() - since >= 3 and counts[3] == len(stream.bad)
              and counts[0] == expected_window_count(stream, settings)):
            return counts
        time.sleep(0.5)
    raise AssertionError(f"job did not drain: counts {last}, expected windows "
                         f"{expected_window_count(stream, settings)}, bad {len(stream.bad)}\n"
                         f"{support.job_exceptions(settings, job_id)}")


# --- the assertions ------------------------------------------------------------------------------------

def detector_config(settings) -> DetectorConfig:
    return DetectorConfig.from_settings(settings)


def assert_windows_equal_reference(settings, stream: Stream) -> list[Trade]:
    on_time = stream.good  # every good trade of the stream is on time (module docstring)
    expected = sorted((row for size in (60, 10) for row in reference_windows(on_time, size)),
                      key=lambda row: (row["symbol"], row["window_seconds"], row["window_start"]))
    rows = support.query(settings, """
        SELECT symbol, window_seconds, (extract(epoch FROM window_start) * 1000)::bigint,
               (extract(epoch FROM window_end) * 1000)::bigint, open, high, low, close, vwap, volume,
               notional,
               trade_count, buy_count, sell_count, min_price, max_price, avg_price, stddev_price, engine
        FROM window_metrics ORDER BY symbol, window_seconds, window_start""")
    assert {row[-1] for row in rows} == {"datastream"}
    actual = [dict(zip(WINDOW_COLUMNS, row[:-1], strict=True)) for row in rows]
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        bad = {name: (got[name], want[name]) for name in WINDOW_COLUMNS
               if not (math.isclose(got[name], want[name], rel_tol=1e-9) if isinstance(want[name], float)
                       else got[name] == want[name])}
        assert not bad, f"{want['symbol']} {want['window_seconds']}s @{want['window_start']}: {bad}"
    assert sum(row["trade_count"] for row in actual if row["window_seconds"] == 60) == len(on_time)
    return on_time


def assert_late_trades_are_exactly(settings, stream: Stream, deliberate: dict[str, Trade]) -> int:
    """late_trades holds the deliberately late trades, each with a watermark past it, and nothing else."""
    assert all(label["delay_ms"] <= MAX_DELAY_MS for label in stream.labels if label["kind"] == "late")
    assert stream.ids("late"), "the stream should hold trades back (out of order, on time)"
    rows = support.query(settings, """
        SELECT trade_id, symbol, price, size, side, (extract(epoch FROM event_time) * 1000)::bigint,
               (extract(epoch FROM watermark) * 1000)::bigint, engine FROM late_trades""")
    assert {row[0] for row in rows} == set(deliberate), "late_trades is not exactly the deliberately late set"
    for trade_id, symbol, price, size, side, event_time, watermark, engine in rows:
        trade = deliberate[trade_id]
        assert (symbol, price, size, side, event_time, engine) == (
            trade.symbol, trade.price, trade.size, trade.side, trade.event_time, "datastream")
        assert event_time <= watermark, f"{trade_id} reported late but ahead of its watermark"
    return len(rows)


def deliberately_late(stream: Stream) -> dict[str, Trade]:
    """One trade per symbol in the stream's first second: behind every watermark once the flush trades
    (10 minutes later, one per symbol, so in every partition that has trades) have been read."""
    first = min(trade.event_time for trade in stream.good)
    symbols = sorted({trade.symbol for trade in stream.good})
    return {f"{symbol}-late": Trade(f"{symbol}-late", symbol, 1.0 + index, 7, "BUY", first + index)
            for index, symbol in enumerate(symbols)}


def assert_dead_letters(settings, stream: Stream, topic: str) -> None:
    rows = support.query(settings, "SELECT payload_sha1, payload, reason, topic, engine, payload_length "
                                   "FROM dead_letters")
    labels = {label["payload_sha1"]: label for label in stream.labels if label["kind"] == "bad"}
    assert len(rows) == len(labels) == len(stream.bad) > 0
    assert {bytes(row[1]).decode() for row in rows} == set(stream.bad)  # the raw bytes, as sent
    for sha1, payload, reason, row_topic, engine, length in rows:
        assert sha1 in labels and reason == labels[sha1]["reason"], (sha1, reason)
        assert (row_topic, engine, length) == (topic, "datastream", len(payload))


def assert_anomalies(settings, stream: Stream, sent_after: list[Trade], quality: bool = True) -> list[tuple]:
    """Exactly the reference detector's findings on every valid trade of each symbol in Kafka order: the
    generator's (key = symbol: one partition, the producer's order), then what the test sent after them
    (flush and deliberately late trades). Recall/precision against the generator's labels printed."""
    config = detector_config(settings)
    expected = {}
    by_symbol = defaultdict(list)
    for trade in stream.good + sent_after:
        by_symbol[trade.symbol].append(trade)
    for trades in by_symbol.values():
        for trade_id, rule, statistic in reference_anomalies(
                trades, lookback=config.lookback, warmup=config.warmup, z_threshold=config.z_threshold,
                price_jump_pct=config.price_jump_pct, volume_z_threshold=config.volume_z_threshold,
                volume_min_stddev=config.volume_min_stddev, tick_size=config.tick_size,
                min_stddev_ticks=config.min_stddev_ticks):
            expected[(trade_id, rule)] = statistic
    rows = support.query(settings, "SELECT trade_id, rule, symbol, z_score FROM anomalies")
    assert {(row[0], row[1]) for row in rows} == set(expected)
    symbols = {trade.trade_id: trade.symbol for trade in stream.good + sent_after}
    for trade_id, rule, symbol, z_score in rows:
        assert symbol == symbols[trade_id]
        assert math.isclose(z_score, expected[(trade_id, rule)], rel_tol=1e-9), (trade_id, rule)

    # Quality on the generator's own trades (the test's flush and late trades jump on purpose), scored by the
    # product's own code (make score).
    table = score([(trade_id, rule, stream.by_id[trade_id].event_time, None)
                   for trade_id, rule, _symbol, _z in rows if trade_id in stream.by_id], stream.labels)
    print(f"\nanomalies: {len(rows)} rows\n{table.render()}")
    if quality:
        flagged, price_zscore = table.rules[ANY], table.rules[PRICE_ZSCORE]
        assert min(flagged.recall["price_spike"], flagged.recall["price_crash"]) >= 0.95
        assert flagged.precision >= 0.9
        assert price_zscore.overall_recall >= 0.9 and price_zscore.precision >= 0.9
        assert flagged.recall["volume_spike"] is None or flagged.recall["volume_spike"] >= 0.9
    return rows


def assert_kafka_anomalies(settings, anomalies_topic: str, rows: list[tuple]) -> None:
    consumer = KafkaConsumer(anomalies_topic, bootstrap_servers=settings.kafka.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        messages = [(message.key.decode(), json.loads(message.value)) for message in consumer]
    finally:
        consumer.close()
    # At-least-once: every anomaly at least once, nothing else, keyed by symbol.
    assert {(value["trade_id"], value["rule"]) for _, value in messages} == {(row[0], row[1]) for row in rows}
    assert all(key == value["symbol"] for key, value in messages)


# --- tests ---------------------------------------------------------------------------------------------

def test_job_matches_the_reference(stack, kafka_topic, scratch_db, tmp_path):
    topic = kafka_topic("mm_trades", partitions=PARTITIONS)
    injected = kafka_topic("mm_injected")
    anomalies_topic = kafka_topic("mm_anomalies")
    stream = generate_file(tmp_path)
    generate_to_kafka(stack, topic, injected)
    support.produce(stack, topic, stream.flush_messages())
    job_id = submit(scratch_db, topic, anomalies_topic)
    try:
        wait_until_drained(scratch_db, stream, job_id)
        # Whether a held-back trade falls behind the watermark depends on how the backlog is read; these
        # are behind it for certain, so the late path is always exercised.
        deliberate = deliberately_late(stream)
        support.produce(stack, topic,
                        [(t.symbol.encode(), t.to_json().encode()) for t in deliberate.values()])
        support.wait_for(lambda: set(deliberate) <= late_ids(scratch_db), 60, "the deliberately late trades")
        counts = table_counts(scratch_db)
        print(f"\ntables (windows, anomalies, late, dead letters): {counts}")
        assert_windows_equal_reference(scratch_db, stream)
        late = assert_late_trades_are_exactly(scratch_db, stream, deliberate)
        print(f"late trades: {late}, all sent late on purpose; {len(stream.ids('late'))} held back by the "
              f"generator (<= {MAX_DELAY_MS} ms) and all on time")
        assert_dead_letters(scratch_db, stream, topic)
        rows = assert_anomalies(scratch_db, stream, stream.flush_trades() + list(deliberate.values()))
        assert_kafka_anomalies(stack, anomalies_topic, rows)
        # Flink's REST API serves metrics fetched every few seconds: wait for them to catch up.
        support.wait_for(lambda: vertex_metric_sum(stack, job_id, ".badRecords") == len(stream.bad), 60,
                         f"metric badRecords = {len(stream.bad)}", interval=2)
        support.wait_for(lambda: vertex_metric_sum(stack, job_id, ".lateTrades") == late, 60,
                         f"metric lateTrades = {late}", interval=2)
    finally:
        support.cancel_job(stack, job_id)


def latest_checkpoint(settings, job_id: str) -> str | None:
    latest = support.flink_rest(settings, f"/jobs/{job_id}/checkpoints").get("latest", {}).get("completed")
    return latest["external_path"] if latest else None


def _source_out(settings, job_id: str) -> int:
    """Records the Kafka source has emitted (its operator's numRecordsOut, summed over subtasks)."""
    return vertex_metric_sum(settings, job_id, "numRecordsOut", prefix="Source_")


def test_restart_from_checkpoint_gives_the_same_tables(stack, kafka_topic, scratch_db, tmp_path):
    """Cancel after a completed checkpoint with data still flowing, resume from the retained checkpoint with
    `flink run -s`, feed the rest: the tables equal the reference, no duplicates, no gaps."""
    topic = kafka_topic("mm_trades", partitions=PARTITIONS)
    anomalies_topic = kafka_topic("mm_anomalies")
    stream = generate_file(tmp_path)
    first, second = stream.messages[:12_000], stream.messages[12_000:]
    support.produce(stack, topic, first[:8_000])
    # This test is about restarts: with source idleness off, the pauses it makes (waiting for a checkpoint,
    # the restart) cannot let one partition move event time alone and make the other's trades late.
    job_id = submit(scratch_db, topic, anomalies_topic, checkpoint_seconds=2, windows_idleness_seconds=0)
    resumed = None
    try:
        # A checkpoint taken after the first 8000 records were read holds open windows and buffered trades.
        support.wait_for(lambda: _source_out(stack, job_id) >= 8_000, 120, "first 8000 records read")
        consumed_at = time.time() * 1000
        support.wait_for(lambda: (support.flink_rest(stack, f"/jobs/{job_id}/checkpoints")
                                  .get("latest", {}).get("completed") or {}).get("latest_ack_timestamp", 0)
                         > consumed_at, 60, "a checkpoint after the first records")
        # More records after that checkpoint: read (and partly written) again after the restart.
        support.produce(stack, topic, first[8_000:])
        support.wait_for(lambda: _source_out(stack, job_id) >= 12_000, 120, "12000 records read")
        checkpoint = latest_checkpoint(stack, job_id)
        support.cancel_job(stack, job_id)
        support.wait_for(lambda: job_state(stack, job_id) == "CANCELED", 60, "job canceled")
        assert checkpoint and checkpoint.startswith("file:"), checkpoint
        before = table_counts(scratch_db)
        print(f"\ncanceled after {checkpoint}; tables then: {before}")
        assert before[0] > 0
        # The rest is in the topic before the job resumes, as after a crash: the resumed job reads one
        # backlog on every partition. (Produced after a pause instead, the first partition to deliver would
        # move the watermark alone while the others are marked idle, and on-time trades of theirs would be
        # late: idleness trades completeness for liveness, see README.)
        support.produce(stack, topic, second + stream.flush_messages())
        resumed = submit(scratch_db, topic, anomalies_topic, "-s", checkpoint, checkpoint_seconds=2,
                         windows_idleness_seconds=0)
        counts = wait_until_drained(scratch_db, stream, resumed)
        print(f"tables after the restart: {counts}")
        assert_windows_equal_reference(scratch_db, stream)
        assert assert_late_trades_are_exactly(scratch_db, stream, {}) == 0
        assert_dead_letters(scratch_db, stream, topic)
        assert_anomalies(scratch_db, stream, stream.flush_trades())
    finally:
        support.cancel_job(stack, job_id)
        if resumed:
            support.cancel_job(stack, resumed)


def redeploy(scratch, topic: str, anomalies_topic: str, job_id: str, *job_args: str) -> str:
    """`python -m stack redeploy` (what `make rescale` / `make upgrade` run): savepoint, stop, resume."""
    env = support.env_for(scratch, kafka_trades_topic=topic, kafka_anomalies_topic=anomalies_topic,
                          flink_checkpoint_interval_seconds=10, windows_idleness_seconds=0)
    result = subprocess.run([sys.executable, "-m", "stack", "redeploy", job_id, *job_args], cwd=support.REPO,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"redeploy failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    print(result.stderr.strip())
    assert job_state(scratch, job_id) == "FINISHED"
    return result.stdout.split()[-1]


def keyed_parallelism(settings, job_id: str) -> int:
    vertices = support.flink_rest(settings, f"/jobs/{job_id}")["vertices"]
    return next(v["parallelism"] for v in vertices if "per symbol" in v["name"])


def partition_lag(settings, topic: str, group_id: str) -> dict[int, int]:
    """{partition: records behind the group's committed offset} (marketpulse.kafka_lag, what the health view
    and /api/health show), {} while the group has committed nothing. The Kafka source commits the offsets of
    each completed checkpoint: all 0 once some job of the group has read everything and checkpointed it,
    whichever job read which part."""
    reader = LagReader(settings.kafka.bootstrap_servers, [topic])
    try:
        groups = {group.group: group for group in reader.read()}
    finally:
        reader.close()
    return {p.partition: p.lag for p in groups[group_id].partitions} if group_id in groups else {}


def unread(settings, topic: str, group_id: str) -> int | None:
    """Records of the topic the group has not read and checkpointed; None before its first commit."""
    lag = partition_lag(settings, topic, group_id)
    return sum(lag.values()) if lag else None


def produce_to_partitions(settings, topic: str, counts: dict[int, int], start_ms: int) -> int:
    """counts[p] valid trades into partition p, event times 10 ms apart from start_ms; returns the next."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    moment = start_ms
    try:
        for partition, count in counts.items():
            for number in range(count):
                trade = Trade(trade_id=f"lag-{partition}-{moment}-{number}", symbol=f"S{partition}",
                              price=100.0 + number % 7, size=10, side="buy", event_time=moment)
                producer.send(topic, value=trade.to_json().encode(), key=trade.symbol.encode(),
                              partition=partition)
                moment += 10
        producer.flush(30)
    finally:
        producer.close()
    return moment


def test_consumer_lag_grows_while_the_job_is_stopped_and_drains_after(stack, kafka_topic, scratch_db):
    """The lag the health view and /api/health show is Kafka's (log end - committed, per partition): stop the
    job with a savepoint and it grows by exactly what is produced into each partition meanwhile; resume from
    the savepoint and it drains to 0 at the next checkpoints."""
    topic = kafka_topic("lag_trades", partitions=PARTITIONS)
    anomalies_topic = kafka_topic("lag_anomalies")
    group_id = f"test-{topic}"
    moment = produce_to_partitions(stack, topic, {0: 200, 1: 200}, 1_767_225_600_000)
    job_id = submit(scratch_db, topic, anomalies_topic, checkpoint_seconds=2)
    resumed = None
    try:
        support.wait_for(lambda: unread(stack, topic, group_id) == 0, 90, "the job to read and checkpoint")
        savepoint = stop_with_savepoint(stack, job_id)
        assert partition_lag(stack, topic, group_id) == {0: 0, 1: 0}
        moment = produce_to_partitions(stack, topic, {0: 300, 1: 120}, moment)
        grown = partition_lag(stack, topic, group_id)
        watching = copy.deepcopy(scratch_db)  # the dashboard watches [kafka] trades_topic
        watching.kafka.trades_topic = topic
        api = create_app(watching).server.test_client().get("/api/health").get_json()
        shown = {(g["group"], p["partition"]): p["lag"] for g in api["kafka"]["consumer_lag"]
                 for p in g["partitions"] if g["topic"] == topic}
        print(f"\nstopped with a savepoint, then 300 + 120 trades produced: lag per partition {grown}, "
              f"/api/health {shown}")
        assert grown == {0: 300, 1: 120}
        assert shown == {(group_id, 0): 300, (group_id, 1): 120}
        started = time.monotonic()
        resumed = submit(scratch_db, topic, anomalies_topic, "-s", savepoint, checkpoint_seconds=2)
        support.wait_for(lambda: partition_lag(stack, topic, group_id) == {0: 0, 1: 0}, 90,
                         "the resumed job to drain the lag", interval=0.5)
        print(f"resumed from {savepoint}: lag 0 on both partitions {time.monotonic() - started:.1f}s after "
              "the resubmission began")
    finally:
        for running in (job_id, resumed):
            if running:
                support.cancel_job(stack, running)


def test_savepoint_rescale_and_upgrade_give_the_same_tables(stack, kafka_topic, scratch_db, tmp_path):
    """Run at parallelism 1; `make rescale` to 2; `make upgrade` back to 1 with a changed but compatible job
    (Python bundles of 50 ms instead of 100 ms). Each step stops with a savepoint and resumes from it
    while trades keep arriving: the tables equal the reference, with exactly the deliberately late trades
    late, no duplicates, no gaps.

    Each later third arrives in two halves: the first while the previous job still runs (it reads some or
    all of it before its savepoint, however the machine's timing goes), the second only once the new job
    runs (so the rescaled and the upgraded job each read records of their own). Before the next step, every
    record so far has been read and checkpointed: the committed offsets of the jobs' consumer group (one
    group for all three) are at the end of the topic. The number of records a job reads is not known in
    advance: how much of the first half the previous job took before stopping is up to timing."""
    topic = kafka_topic("mm_trades", partitions=PARTITIONS)
    anomalies_topic = kafka_topic("mm_anomalies")
    group_id = f"test-{topic}"  # what submit() gives the first job; the redeployed ones keep it
    stream = generate_file(tmp_path)
    thirds = [stream.messages[:7_000], stream.messages[7_000:14_000], stream.messages[14_000:]]
    steps = [(), ("--parallelism", "2"), ("--parallelism", "1", "--python-bundle-ms", "50")]
    job_ids: list[str] = []
    try:
        for number, (messages, job_args) in enumerate(zip(thirds, steps, strict=True)):
            last = number == len(steps) - 1
            if number == 0:
                support.produce(stack, topic, messages)
                # Idleness off, as in the restart test: a source subtask that starts more than
                # idleness_seconds after its sibling (a loaded machine) would be marked idle and the other
                # partition would move event time alone.
                job_ids.append(submit(scratch_db, topic, anomalies_topic, windows_idleness_seconds=0))
                after_start = messages
            else:
                half = len(messages) // 2
                support.produce(stack, topic, messages[:half])
                job_ids.append(redeploy(scratch_db, topic, anomalies_topic, job_ids[-1],
                                        "--group-id", group_id, *job_args))
                wait_running_all(scratch_db, job_ids[-1])
                after_start = messages[half:]
                support.produce(stack, topic, after_start + (stream.flush_messages() if last else []))
            job_id = job_ids[-1]
            print(f"\nstep {number + 1}: keyed operator parallelism {keyed_parallelism(stack, job_id)}, "
                  f"options {' '.join(job_args) or '(none)'}; tables {table_counts(scratch_db)}")
            if last:
                break

            # Everything so far read (by this job or, for the first half, its predecessor) and checkpointed;
            # this job read at least what was produced after it started (metrics start at 0 per job).
            count = len(after_start)

            def read_so_far(job_id=job_id, count=count):
                return (unread(stack, topic, group_id) == 0 and _source_out(stack, job_id) >= count
                        and table_counts(scratch_db)[0] > 0)

            support.wait_for(read_so_far, 120, f"step {number + 1} to read and checkpoint the records so far",
                             interval=2)
            print(f"step {number + 1}: job read {_source_out(stack, job_id)} records, "
                  f"{len(after_start)} of them produced after it started; tables {table_counts(scratch_db)}")
        assert [keyed_parallelism(stack, job_id) for job_id in job_ids] == [1, 2, 1]
        counts = wait_until_drained(scratch_db, stream, job_ids[-1])
        print(f"tables at the end: {counts}")
        deliberate = deliberately_late(stream)
        support.produce(stack, topic,
                        [(t.symbol.encode(), t.to_json().encode()) for t in deliberate.values()])
        support.wait_for(lambda: set(deliberate) <= late_ids(scratch_db), 60, "the deliberately late trades")
        assert_windows_equal_reference(scratch_db, stream)
        assert assert_late_trades_are_exactly(scratch_db, stream, deliberate) == len(deliberate)
        assert_dead_letters(scratch_db, stream, topic)
        assert_anomalies(scratch_db, stream, stream.flush_trades() + list(deliberate.values()))
    finally:
        for job_id in job_ids:
            support.cancel_job(stack, job_id)
