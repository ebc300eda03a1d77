"""The Flink SQL pipeline (sql/pipeline.sql: window metrics, indicators, top movers and the price z-score rule
as one job, what `make demo` runs) on the real cluster, checked value by value against references.

One seeded generator stream goes into a topic of its own (4 partitions); the pipeline runs once over it with
`python -m stack sql` (sql-client.sh -f, the job is submitted detached) against a scratch database, and the
job is cancelled at the end. Each test checks one script's tables. The same generator options with --output
give the exact records.

The run has three phases so that the result is deterministic:
1. the stream is in the topic before the job starts; the test waits until the first windows are written,
   which proves the watermark has passed them, then pauses longer than the idleness timeout (the market
   falls silent; event time must resume afterwards);
2. then it produces one deliberately late trade per symbol, in the first window: behind the watermark for
   certain, so it must land in late_trades (window_metrics.sql) and in no window, bar or ranking;
3. then one 'flush' trade per partition an hour of event time later (symbol ZZFLUSH, left out of every
   assertion): it moves the watermark past every real window, so the last windows fire too.

Trades the generator itself delays (--late-fraction) are held back by less than the watermark's
out-of-orderness bound (--max-delay-ms), so by the watermark rule they are ahead of their partition's
watermark and on time, however fast each partition is read. The expected late set is therefore known
without looking at the job: exactly the deliberate trades; the windows equal the reference over all other
valid trades.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass

import pytest
from kafka import KafkaConsumer

from alerts.policy import parse_anomaly
from marketpulse.alert_rules import INDICATOR_RULES
from marketpulse.config import Settings
from marketpulse.trade import Trade
from tests import support
from tests.pipeline import (
    EXACT_COLUMNS,
    FLUSH_SYMBOL,
    RESULT_TIMEOUT,
    WINDOW_COLUMNS,
    Stream,
    assert_healthy,
    close_enough,
    engine_windows,
    epoch_ms,
    flush_trades,
    generate,
    late_trades_for,
    reference_for,
    send,
    submit_sql,
)
from tests.reference import (
    EMA_TERMS,
    reference_indicator_alerts,
    reference_indicators,
    reference_sql_price_zscores,
    reference_windows,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4
# Below the 2 s out-of-orderness bound, with a margin for the generator's ms rounding: never late.
MAX_DELAY_MS = 1900

TOP_N = 5


@dataclass
class PipelineRun:
    settings: Settings
    scratch: Settings
    stream: Stream
    deliberate: list[Trade]
    job_id: str
    anomalies_topic: str


def run_three_phases(settings, scratch, topic, stream, job_id, first_rows_sql) -> list[Trade]:
    """Phases 1-3 of the module docstring; returns the deliberately late trades."""
    support.wait_for(lambda: (assert_healthy(settings, job_id),
                              support.query(scratch, first_rows_sql)[0][0] > 0)[1],
                     RESULT_TIMEOUT, "the first windows (phase 1)", interval=1)
    # A pause longer than the idleness timeout: event time must resume after the topic fell silent.
    time.sleep(settings.windows.idleness_seconds + 3)
    late = late_trades_for(stream)
    send(settings, topic, late)
    send(settings, topic, flush_trades(stream, PARTITIONS),
         partition_of=lambda trade: int(trade.trade_id[-1]))
    return late


@pytest.fixture(scope="module")
def pipeline(stack, tmp_path_factory):
    """The pipeline over one stream that every script's checks can use: bad records, delayed (on-time)
    trades, 14 symbols (more than the 5 of a ranking), a volatile market (distinct moves), and 2,000 s of
    event time: over 128 ten-second bars per symbol, so the EMAs' truncation at 128 bars is exercised."""
    settings = stack
    topic = support.create_topic(settings, support.unique_name("sql.trades"), PARTITIONS)
    injected = support.create_topic(settings, support.unique_name("sql.injected"))
    anomalies = support.create_topic(settings, support.unique_name("sql.anomalies"))
    scratch = support.create_scratch_database(settings)
    job_ids: list[str] = []
    try:
        stream = generate(topic, injected, tmp_path_factory.mktemp("sql"), "--seed", "11", "--count",
                          "8000", "--event-rate", "4", "--late-fraction", "0.03", "--max-delay-ms",
                          str(MAX_DELAY_MS), "--bad-fraction", "0.01", "--universe", "14", "--vol-scale", "3")
        assert stream.bad > 0 and stream.delayed_ids
        job_ids.append(submit_sql(settings, scratch, topic, "sql/pipeline.sql", anomalies_topic=anomalies))
        deliberate = run_three_phases(settings, scratch, topic, stream, job_ids[-1],
                                      "SELECT count(*) FROM window_metrics WHERE window_seconds = "
                                      f"{settings.windows.size_seconds}")
        yield PipelineRun(settings, scratch, stream, deliberate, job_ids[-1], anomalies)
    finally:
        for job_id in job_ids:
            support.cancel_job(settings, job_id)
        support.drop_scratch_database(settings, scratch)
        for name in (topic, injected, anomalies):
            support.delete_topic(settings, name)


def test_the_pipeline_is_one_job_reading_the_topic_once(pipeline):
    """One job, one Kafka source operator for the trades (and one for the ground truth)."""
    plan = support.flink_rest(pipeline.settings, f"/jobs/{pipeline.job_id}")
    sources = [vertex["name"] for vertex in plan["vertices"] if vertex["name"].startswith("Source:")]
    assert len(sources) == 2, sources
    assert sum("trades" in name for name in sources) == 1, sources


# --- window_metrics.sql (in the pipeline) -------------------------------------------------------------

def test_window_metrics_match_the_reference(pipeline):
    settings, scratch_db, stream, deliberate = pipeline.settings, pipeline.scratch, pipeline.stream, \
        pipeline.deliberate
    sizes = (settings.windows.size_seconds, settings.windows.short_size_seconds)

    def late_ids() -> set[str]:
        return {row[0] for row in support.query(
            scratch_db, "SELECT trade_id FROM late_trades WHERE engine = 'sql'")}

    deliberate_ids = {trade.trade_id for trade in deliberate}
    expected = reference_for(stream.valid, sizes)

    def settled():
        assert_healthy(settings, pipeline.job_id)
        late = late_ids()
        if not deliberate_ids <= late:
            return None
        got = engine_windows(scratch_db, "sql")
        counts = {key: row["trade_count"] for key, row in got.items()}
        return (late, expected, got) if counts == {k: r["trade_count"] for k, r in expected.items()} else None

    late, expected, got = support.wait_for(settled, RESULT_TIMEOUT, "all windows = reference", interval=2)

    # Late rule, both sides: exactly the deliberate trades are late, and the windows hold all the others.
    assert settings.windows.max_out_of_orderness_ms > MAX_DELAY_MS
    assert late == deliberate_ids
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


INDICATOR_COLUMNS = ("close", "sma", "ewma", "bollinger_upper", "bollinger_lower", "volatility", "rsi",
                     "ema_fast", "ema_slow", "macd", "macd_signal", "macd_histogram", "sma_long")
# Differences of price-sized EMAs: their rounding error is relative to the price, not to themselves (a
# histogram crossing zero is ~1e-6 of the price), so they are compared to 1e-9 of the bar's close.
PRICE_DIFFERENCES = ("macd", "macd_signal", "macd_histogram")


def test_indicators_match_the_documented_formulas(pipeline):
    """Every bar's indicators equal the formulas of docs/indicators.md computed in Python (tests/reference.py:
    statistics, math.fsum, pandas ewm) with the periods of conf/pipeline.toml [indicators]."""
    settings, scratch_db, stream, deliberate = pipeline.settings, pipeline.scratch, pipeline.stream, \
        pipeline.deliberate
    short, size, periods = settings.windows.short_size_seconds, settings.windows.size_seconds, \
        settings.indicators

    bars_by_symbol = defaultdict(list)
    for bar in reference_windows(stream.valid, short):
        bars_by_symbol[bar["symbol"]].append(bar)
    expected = {(row["symbol"], row["bar_start"]): row
                for bars in bars_by_symbol.values() for row in reference_indicators(bars, periods)}
    sliding = reference_sliding(stream.valid, size, short)
    assert len(bars_by_symbol) == len(stream.symbols)
    # Every warm-up ends and the EMAs' truncation matters (more bars than the 128 they weigh).
    assert min(map(len, bars_by_symbol.values())) > max(EMA_TERMS, periods.sma_long_bars) + 10

    def settled():
        assert_healthy(settings, pipeline.job_id)
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

    got_rows = {}
    mismatches = []
    for symbol, bar_start, bar_end, bar_seconds, *values in indicators:
        want = expected[(symbol, bar_start)]
        assert (bar_end, bar_seconds) == (want["bar_end"], short)
        got_rows[(symbol, bar_start)] = dict(zip(INDICATOR_COLUMNS, values, strict=True))
        for column, got in got_rows[(symbol, bar_start)].items():
            tolerance = 1e-9 * want["close"] if column in PRICE_DIFFERENCES else 1e-12
            if not close_enough(got, want[column], abs_=tolerance):
                mismatches.append((symbol, bar_start, column, got, want[column]))
    assert not mismatches, mismatches[:20]
    compared = len(got_rows) * len(INDICATOR_COLUMNS)
    largest = max(abs(row["macd_histogram"]) for row in got_rows.values())
    print(f"indicators: {len(got_rows)} bars of {len(bars_by_symbol)} symbols, {compared} values equal to "
          f"the reference; largest |MACD histogram| {largest:.4g}")
    # The warm-up is visible: each indicator starts at its documented bar, the EMAs at the first.
    for symbol, bars in bars_by_symbol.items():
        got = [got_rows[(symbol, bar["window_start"])] for bar in bars]
        for column, first in (("sma", periods.sma_bars - 1), ("sma_long", periods.sma_long_bars - 1),
                              ("volatility", periods.volatility_returns), ("macd", 0), ("ewma", 0)):
            assert [row[column] is not None for row in got] == [i >= first for i in range(len(bars))], column
    # The deliberate late trades (price 1.0 + i, far below the market) moved no close, sma or window.
    assert all(row["close"] > 5 for row in got_rows.values())

    for symbol, window_end, window_start, window_seconds, slide_seconds, avg, vwap, volume, count in averages:
        want = sliding[(symbol, window_end)]
        assert (window_start, window_seconds, slide_seconds, volume, count) == \
            (want["window_start"], size, short, want["volume"], want["trade_count"])
        assert close_enough(avg, want["avg_price"]) and close_enough(vwap, want["vwap"]), (symbol, window_end)
    assert {trade.trade_id for trade in deliberate}  # produced, and excluded above by the reference


def test_indicator_alert_rules_fire_on_the_bars_that_cross(pipeline):
    """RSI overbought/oversold and Bollinger band breaks (docs/indicators.md "Alert rules") reach the
    anomalies topic as the alert service reads them (alerts/policy.py), one message per bar and rule that
    crosses its level (at least once), equal to the rules applied to the reference indicators."""
    settings, stream, periods = pipeline.settings, pipeline.stream, pipeline.settings.indicators
    bars_by_symbol = defaultdict(list)
    for bar in reference_windows(stream.valid, settings.windows.short_size_seconds):
        bars_by_symbol[bar["symbol"]].append(bar)
    expected, borderline = {}, set()
    for bars in bars_by_symbol.values():
        fired, near = reference_indicator_alerts(reference_indicators(bars, periods), periods.rsi_overbought,
                                                 periods.rsi_oversold)
        expected |= fired
        borderline |= near
    assert {rule for _bar, rule in expected} == set(INDICATOR_RULES)  # every rule fires in this stream

    def settled():
        assert_healthy(settings, pipeline.job_id)
        messages = kafka_messages(settings, pipeline.anomalies_topic)
        keys = {(value["trade_id"], value["rule"]) for _key, value in messages}
        return messages if keys - borderline == set(expected) - borderline else None

    messages = support.wait_for(settled, RESULT_TIMEOUT, "every indicator alert on the topic", interval=3)
    for key, value in messages:
        alert = parse_anomaly(json.dumps(value))  # what the alert service makes of it
        assert key == alert.symbol and alert.trade_id.startswith(f"{alert.symbol}@")
        if alert.key in borderline:
            continue
        event_time, price, statistic, mean = expected[alert.key]
        assert (alert.event_time, alert.price, alert.size) == (event_time, price, None), alert
        assert close_enough(alert.z_score, statistic) and close_enough(alert.mean, mean), alert
    counts = defaultdict(int)
    for _bar, rule in expected:
        counts[rule] += 1
    print(f"indicator alerts: {len(messages)} messages, {len(expected)} expected ({dict(counts)}), "
          f"{len(borderline)} borderline comparisons left out")


def kafka_messages(settings, topic: str) -> list[tuple[str, dict]]:
    """Every (key, JSON value) on the topic so far."""
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        return [(message.key.decode(), json.loads(message.value)) for message in consumer]
    finally:
        consumer.close()


# --- top_movers.sql ------------------------------------------------------------------------------------

def test_top_movers_rank_every_window(pipeline):
    settings, scratch_db, stream = pipeline.settings, pipeline.scratch, pipeline.stream
    size = settings.windows.size_seconds

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
        assert_healthy(settings, pipeline.job_id)
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


# --- anomalies.sql -------------------------------------------------------------------------------------

def test_the_price_zscore_rule_is_quiet_on_a_volatile_market_like_its_reference(pipeline):
    """The rule of sql/anomalies.sql in the pipeline, on delayed (out-of-order, on-time) trades of a market
    three times as volatile as the default and no injection: exactly what its reference finds (none here;
    tests/integration/test_sql_zscore.py checks the findings on injected anomalies)."""
    settings, scratch_db, stream = pipeline.settings, pipeline.scratch, pipeline.stream
    detector = settings.detector
    by_symbol = defaultdict(list)
    for trade in stream.valid:
        by_symbol[trade.symbol].append(trade)
    want = set()
    for trades in by_symbol.values():
        want |= set(reference_sql_price_zscores(
            trades, lookback=detector.lookback, warmup=detector.warmup, z_threshold=detector.z_threshold,
            price_jump_pct=detector.price_jump_pct, tick_size=detector.tick_size,
            min_stddev_ticks=detector.min_stddev_ticks))
    # The rule's rows come out with the watermark, as the windows do: once the stream's last short window is
    # written, every trade has passed the rule.
    short_ms = settings.windows.short_size_seconds * 1000
    last_start = max(trade.event_time for trade in stream.valid) // short_ms * short_ms
    last_window = ("SELECT count(*) FROM window_metrics WHERE engine = 'sql' AND window_seconds = %s AND "
                   "window_start >= to_timestamp(%s / 1000.0)")
    support.wait_for(lambda: support.query(scratch_db, last_window, (short_ms // 1000, last_start))[0][0] > 0,
                     RESULT_TIMEOUT, "the stream's last short window")
    time.sleep(2)  # the anomalies sink's flush interval (1 s), with a margin
    got = support.query(scratch_db, "SELECT trade_id, rule, engine FROM anomalies")
    assert {(trade_id, rule, engine) for trade_id, rule, engine in got} == \
        {(trade_id, "price_zscore", "sql") for trade_id in want}
