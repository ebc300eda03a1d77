"""The Flink SQL scripts (sql/*.sql) on the real cluster, checked value by value against references.

Each test feeds a seeded generator stream into a topic of its own (4 partitions), runs one script with
`python -m stack sql` (sql-client.sh -f, the job is submitted detached) against a scratch database, and
cancels the job at the end. The same generator options with --output give the exact records.

The run has three phases so that the result is deterministic:
1. the stream is in the topic before the job starts; the test waits until the first windows are written,
   which proves the watermark has passed them, then pauses longer than the idleness timeout (the market
   falls silent; event time must resume afterwards);
2. then it produces one deliberately late trade per symbol, in the first window: behind the watermark for
   certain, so it must land in late_trades (window_metrics.sql) and in no window of any script;
3. then one 'flush' trade per partition an hour of event time later (symbol ZZFLUSH, left out of every
   assertion): it moves the watermark past every real window, so the last windows fire too.

Trades the generator itself delays (--late-fraction) may or may not be behind the watermark, depending on
how fast the source reads each partition; the window test therefore takes the late set from the job's own
late_trades and checks both sides of the rule: every late trade is one the generator delayed (or one of
the deliberate ones), and the windows equal the reference over all valid trades except exactly those.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from kafka import KafkaProducer

from marketpulse.config import Settings
from marketpulse.trade import InvalidTrade, Trade, parse_trade
from tests import support
from tests.reference import reference_windows

pytestmark = pytest.mark.integration

PARTITIONS = 4
FLUSH_SYMBOL = "ZZFLUSH"
START_MS = 1_735_828_200_000  # the generator's seeded default start, 2025-01-02T14:30:00Z (60 s aligned)
SUBMIT_TIMEOUT = 180
RESULT_TIMEOUT = 240

# Indicator parameters, as sql/indicators.sql and docs/indicators.md define them.
SMA_BARS = 20
BOLLINGER_K = 2.0
EWMA_BARS = 32
EWMA_Q = 1 - 2 / (10 + 1)
VOLATILITY_RETURNS = 20
RSI_CHANGES = 14
TOP_N = 5

WINDOW_COLUMNS = ("symbol", "window_seconds", "window_start", "window_end", "open", "high", "low", "close",
                  "vwap", "volume", "notional", "trade_count", "buy_count", "sell_count", "min_price",
                  "max_price", "avg_price", "stddev_price")
EXACT_COLUMNS = {"symbol", "window_seconds", "window_start", "window_end", "open", "high", "low", "close",
                 "volume", "trade_count", "buy_count", "sell_count", "min_price", "max_price"}


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


def generate(topic: str, injected_topic: str, tmp_path: Path, *options: str) -> Stream:
    """The generator to Kafka, then the same options to a file (the exact records)."""
    common = [sys.executable, "-m", "generator", *options, "--rate", "0", "--topic", topic,
              "--injected-topic", injected_topic, "--no-reference", "--quiet",
              # The Flink Kafka connector cannot read zstd batches (no zstd-jni on the cluster).
              "--compression", "gzip"]
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


def flush_trades(stream: Stream, partitions: int = PARTITIONS) -> list[Trade]:
    """One trade per partition, an hour of event time after the stream: every real window fires."""
    at = stream.max_event_time + 3_600_000
    return [Trade(f"FLUSH-{p}", FLUSH_SYMBOL, 1.0, 1, "BUY", at) for p in range(partitions)]


# --- running a script ----------------------------------------------------------------------------------

def pipeline_name(script: Path) -> str:
    return re.search(r"SET 'pipeline.name' = '([^']+)';", script.read_text()).group(1)


def wait_for_slots(settings: Settings, needed: int, timeout: float = 300) -> None:
    """The cluster is shared: wait until `needed` task slots are free rather than fail on submission."""
    support.wait_for(lambda: support.flink_rest(settings, "/overview")["slots-available"] >= needed,
                     timeout, f"{needed} free task slots on {settings.flink.rest_url}", interval=2)


def submit_sql(settings: Settings, scratch: Settings, topic: str, script: str) -> str:
    """Runs `python -m stack sql SCRIPT` against the scratch database and topic; returns the job id once
    the job (found on the REST API by its pipeline.name) is running."""
    name = pipeline_name(support.REPO / script)
    wait_for_slots(settings, 1)
    before = {job["jid"] for job in support.flink_jobs(settings)}
    result = subprocess.run([sys.executable, "-m", "stack", "sql", script], cwd=support.REPO,
                            env=support.env_for(scratch, kafka_trades_topic=topic),
                            capture_output=True, text=True, timeout=SUBMIT_TIMEOUT)
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


@pytest.fixture
def jobs(stack):
    """Job ids appended here are cancelled after the test, whatever happens."""
    started: list[str] = []
    yield started
    for job_id in started:
        support.cancel_job(stack, job_id)


def run_three_phases(settings, scratch, topic, stream, job_id, first_rows_sql) -> list[Trade]:
    """Phases 1-3 of the module docstring; returns the deliberately late trades."""
    support.wait_for(lambda: (assert_healthy(settings, job_id),
                              support.query(scratch, first_rows_sql)[0][0] > 0)[1],
                     RESULT_TIMEOUT, "the first windows (phase 1)", interval=1)
    # A pause longer than the idleness timeout: event time must resume after the topic fell silent.
    time.sleep(settings.windows.idleness_seconds + 3)
    late = late_trades_for(stream)
    send(settings, topic, late)
    send(settings, topic, flush_trades(stream), partition_of=lambda trade: int(trade.trade_id[-1]))
    return late


# --- window_metrics.sql --------------------------------------------------------------------------------

def sql_windows(scratch: Settings) -> dict[tuple, dict]:
    columns = ", ".join(epoch_ms(c) if c in ("window_start", "window_end") else c for c in WINDOW_COLUMNS)
    rows = support.query(scratch, f"SELECT {columns} FROM window_metrics WHERE engine = 'sql' "
                                  "AND symbol <> %s", (FLUSH_SYMBOL,))
    return {(row[0], row[1], row[2]): dict(zip(WINDOW_COLUMNS, row, strict=True)) for row in rows}


def reference_for(trades: list[Trade], sizes: tuple[int, ...]) -> dict[tuple, dict]:
    return {(row["symbol"], size, row["window_start"]): row
            for size in sizes for row in reference_windows(trades, size)}


def test_window_metrics_match_the_reference(stack, kafka_topic, scratch_db, jobs, tmp_path):
    settings = stack
    sizes = (settings.windows.size_seconds, settings.windows.short_size_seconds)
    topic = kafka_topic("sql.trades", partitions=PARTITIONS)
    stream = generate(topic, kafka_topic("sql.injected"), tmp_path, "--seed", "11", "--count", "8000",
                      "--event-rate", "20", "--late-fraction", "0.03", "--max-delay-ms", "20000",
                      "--bad-fraction", "0.01")
    assert stream.bad > 0 and stream.delayed_ids

    jobs.append(submit_sql(settings, scratch_db, topic, "sql/window_metrics.sql"))
    deliberate = run_three_phases(settings, scratch_db, topic, stream, jobs[-1],
                                  "SELECT count(*) FROM window_metrics WHERE window_seconds = "
                                  f"{settings.windows.size_seconds}")

    def late_ids() -> set[str]:
        return {row[0] for row in support.query(
            scratch_db, "SELECT trade_id FROM late_trades WHERE engine = 'sql'")}

    def settled():
        assert_healthy(settings, jobs[-1])
        late = late_ids()
        if not {trade.trade_id for trade in deliberate} <= late:
            return None
        expected = reference_for([t for t in stream.valid if t.trade_id not in late], sizes)
        got = sql_windows(scratch_db)
        counts = {key: row["trade_count"] for key, row in got.items()}
        return (late, expected, got) if counts == {k: r["trade_count"] for k, r in expected.items()} else None

    late, expected, got = support.wait_for(settled, RESULT_TIMEOUT, "all windows = reference", interval=2)

    # Late rule, both sides: only delayed trades are late, and the windows hold exactly the others.
    assert late - {t.trade_id for t in deliberate} <= stream.delayed_ids
    assert set(got) == set(expected)
    assert {size for _symbol, size, _start in got} == set(sizes)
    mismatches = []
    for key, want in expected.items():
        for column in WINDOW_COLUMNS:
            ok = (got[key][column] == want[column] if column in EXACT_COLUMNS
                  else close_enough(got[key][column], want[column]))
            if not ok:
                mismatches.append((key, column, got[key][column], want[column]))
    assert not mismatches, mismatches[:20]
    # Every valid trade is in a window of each size or late, none twice.
    for size in sizes:
        assert sum(row["trade_count"] for key, row in got.items() if key[1] == size) + len(late) == \
            len(stream.valid) + len(deliberate)

    # The late rows carry the trade and the watermark that made it late.
    rows = support.query(scratch_db, f"SELECT trade_id, symbol, price, size, side, {epoch_ms('event_time')}, "
                                     f"{epoch_ms('watermark')} FROM late_trades WHERE engine = 'sql'")
    by_id = {trade.trade_id: trade for trade in [*stream.valid, *deliberate]}
    for trade_id, symbol, price, size, side, event_time, watermark in rows:
        trade = by_id[trade_id]
        assert (symbol, price, size, side, event_time) == \
            (trade.symbol, trade.price, trade.size, trade.side, trade.event_time)
        assert watermark >= event_time  # at or behind the watermark it met


# --- indicators.sql ------------------------------------------------------------------------------------

def reference_indicators(bars: list[dict]) -> list[dict]:
    """The formulas of docs/indicators.md over one symbol's bars (reference_windows rows) in time order."""
    closes = [bar["close"] for bar in bars]
    rows = []
    for i, bar in enumerate(bars):
        last = closes[max(0, i - SMA_BARS + 1): i + 1]
        sma = upper = lower = volatility = rsi = None
        if len(last) == SMA_BARS:
            sma = statistics.fmean(last)
            spread = BOLLINGER_K * statistics.pstdev(last)
            upper, lower = sma + spread, sma - spread
        weights = [EWMA_Q ** k for k in range(min(i + 1, EWMA_BARS))]
        ewma = math.fsum(w * closes[i - k] for k, w in enumerate(weights)) / math.fsum(weights)
        if i >= VOLATILITY_RETURNS:
            returns = [math.log(closes[j] / closes[j - 1]) for j in range(i - VOLATILITY_RETURNS + 1, i + 1)]
            volatility = statistics.stdev(returns)
        if i >= RSI_CHANGES:
            changes = [closes[j] - closes[j - 1] for j in range(i - RSI_CHANGES + 1, i + 1)]
            gains = math.fsum(max(c, 0.0) for c in changes)
            losses = math.fsum(max(-c, 0.0) for c in changes)
            rsi = 100 * gains / (gains + losses) if gains + losses > 0 else None
        rows.append({"symbol": bar["symbol"], "bar_start": bar["window_start"], "bar_end": bar["window_end"],
                     "close": bar["close"], "sma": sma, "ewma": ewma, "bollinger_upper": upper,
                     "bollinger_lower": lower, "volatility": volatility, "rsi": rsi})
    return rows


def reference_sliding(trades: list[Trade], size_s: int, slide_s: int) -> dict[tuple, dict]:
    size, slide = size_s * 1000, slide_s * 1000
    groups: dict[tuple, list[Trade]] = defaultdict(list)
    for trade in trades:
        first_end = trade.event_time - trade.event_time % slide + slide
        for end in range(first_end, trade.event_time + size + 1, slide):
            if end - size <= trade.event_time < end:
                groups[(trade.symbol, end)].append(trade)
    return {key: {"avg_price": statistics.fmean(t.price for t in members),
                  "vwap": math.fsum(t.price * t.size for t in members) / sum(t.size for t in members),
                  "volume": sum(t.size for t in members), "trade_count": len(members),
                  "window_start": key[1] - size}
            for key, members in groups.items()}


INDICATOR_COLUMNS = ("close", "sma", "ewma", "bollinger_upper", "bollinger_lower", "volatility", "rsi")


def test_indicators_match_the_documented_formulas(stack, kafka_topic, scratch_db, jobs, tmp_path):
    settings = stack
    short, size = settings.windows.short_size_seconds, settings.windows.size_seconds
    topic = kafka_topic("sql.trades", partitions=PARTITIONS)
    # No generator delays: every trade but the deliberate ones is on time, for certain.
    stream = generate(topic, kafka_topic("sql.injected"), tmp_path, "--seed", "12", "--count", "8000",
                      "--event-rate", "20", "--bad-fraction", "0.01")

    jobs.append(submit_sql(settings, scratch_db, topic, "sql/indicators.sql"))
    first_bar = f"SELECT count(*) FROM indicators WHERE bar_start = to_timestamp({START_MS} / 1000.0)"
    deliberate = run_three_phases(settings, scratch_db, topic, stream, jobs[-1], first_bar)

    bars_by_symbol = defaultdict(list)
    for bar in reference_windows(stream.valid, short):
        bars_by_symbol[bar["symbol"]].append(bar)
    expected = {(row["symbol"], row["bar_start"]): row
                for bars in bars_by_symbol.values() for row in reference_indicators(bars)}
    sliding = reference_sliding(stream.valid, size, short)
    assert len(bars_by_symbol) == len(stream.symbols) and min(map(len, bars_by_symbol.values())) > 30

    def settled():
        assert_healthy(settings, jobs[-1])
        indicators = support.query(
            scratch_db, f"SELECT symbol, {epoch_ms('bar_start')}, {epoch_ms('bar_end')}, bar_seconds, "
                        f"{', '.join(INDICATOR_COLUMNS)} FROM indicators WHERE symbol <> %s", (FLUSH_SYMBOL,))
        averages = support.query(
            scratch_db, f"SELECT symbol, {epoch_ms('window_end')}, {epoch_ms('window_start')}, "
                        "window_seconds, slide_seconds, avg_price, vwap, volume, trade_count "
                        "FROM moving_averages WHERE symbol <> %s", (FLUSH_SYMBOL,))
        done = len(indicators) == len(expected) and len(averages) == len(sliding)
        return (indicators, averages) if done else None

    indicators, averages = support.wait_for(settled, RESULT_TIMEOUT, "every bar and sliding window",
                                            interval=2)

    mismatches = []
    for symbol, bar_start, bar_end, bar_seconds, *values in indicators:
        want = expected[(symbol, bar_start)]
        assert (bar_end, bar_seconds) == (want["bar_end"], short)
        for column, got in zip(INDICATOR_COLUMNS, values, strict=True):
            if not close_enough(got, want[column]):
                mismatches.append((symbol, bar_start, column, got, want[column]))
    assert not mismatches, mismatches[:20]
    # The warm-up is visible: each indicator starts at its documented bar.
    for symbol, bars in bars_by_symbol.items():
        got = sorted((row for row in indicators if row[0] == symbol), key=lambda row: row[1])
        assert [row[5] is not None for row in got] == [i >= SMA_BARS - 1 for i in range(len(bars))]
        assert [row[9] is not None for row in got] == [i >= VOLATILITY_RETURNS for i in range(len(bars))]
    # The deliberate late trades (price 1.0 + i, far below the market) moved no close, sma or window.
    assert all(row[4] > 5 for row in indicators)

    for symbol, window_end, window_start, window_seconds, slide_seconds, avg, vwap, volume, count in averages:
        want = sliding[(symbol, window_end)]
        assert (window_start, window_seconds, slide_seconds, volume, count) == \
            (want["window_start"], size, short, want["volume"], want["trade_count"])
        assert close_enough(avg, want["avg_price"]) and close_enough(vwap, want["vwap"]), (symbol, window_end)
    assert {trade.trade_id for trade in deliberate}  # produced, and excluded above by the reference


# --- top_movers.sql ------------------------------------------------------------------------------------

def test_top_movers_rank_every_window(stack, kafka_topic, scratch_db, jobs, tmp_path):
    settings = stack
    size = settings.windows.size_seconds
    topic = kafka_topic("sql.trades", partitions=PARTITIONS)
    stream = generate(topic, kafka_topic("sql.injected"), tmp_path, "--seed", "13", "--count", "8000",
                      "--event-rate", "20", "--universe", "14", "--vol-scale", "3")

    jobs.append(submit_sql(settings, scratch_db, topic, "sql/top_movers.sql"))
    run_three_phases(settings, scratch_db, topic, stream, jobs[-1], "SELECT count(*) FROM top_movers")

    expected = {}
    by_window = defaultdict(list)
    for row in reference_windows(stream.valid, size):
        by_window[row["window_start"]].append(row)
    for start, rows in by_window.items():
        moves = [(r["symbol"], 100 * (r["close"] / r["open"] - 1), r) for r in rows]
        rankings = {"gainers": sorted(moves, key=lambda m: (-m[1], m[0])),
                    "losers": sorted(moves, key=lambda m: (m[1], m[0])),
                    "volume": sorted(moves, key=lambda m: (-m[2]["volume"], m[0]))}
        for ranking, ordered in rankings.items():
            for rank, (symbol, pct, row) in enumerate(ordered[:TOP_N], start=1):
                expected[(ranking, start, rank)] = (symbol, pct, row["open"], row["close"], row["volume"],
                                                    row["trade_count"], row["window_end"])
    assert len(by_window) >= 6 and min(map(len, by_window.values())) > TOP_N

    def settled():
        assert_healthy(settings, jobs[-1])
        rows = support.query(scratch_db, f"SELECT ranking, {epoch_ms('window_start')}, rank, symbol, "
                                         f"pct_change, open, close, volume, trade_count, "
                                         f"{epoch_ms('window_end')}, window_seconds FROM top_movers")
        return rows if len(rows) == len(expected) else None

    rows = support.wait_for(settled, RESULT_TIMEOUT, "every window's rankings", interval=2)
    for ranking, start, rank, symbol, pct, open_, close, volume, count, end, seconds in rows:
        want = expected[(ranking, start, rank)]
        assert (symbol, open_, close, volume, count, end, seconds) == \
            (want[0], want[2], want[3], want[4], want[5], want[6], size), (ranking, start, rank)
        assert close_enough(pct, want[1]), (ranking, start, rank, pct, want[1])
