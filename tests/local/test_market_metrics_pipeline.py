"""The DataStream job's topology (jobs/market_metrics.build_pipeline) on a local mini-cluster: a fixed list of
Kafka values in, every window row, anomaly, late trade and dead letter out, compared exactly.

Watermarks are periodic in Flink, so the test makes them deterministic: the values pass a test-only map that
sleeps 200 ms each, the watermark interval is 1 ms and Python bundles hold one record, so the watermark
generator emits max(event_time seen) - 2000 - 1 before the next record. The keyed Python operator may still
see it several records later (PyFlink holds a watermark while a bundle of timers is in flight), so every late
trade below is behind the watermark by a margin of several records, and the watermark stored with a late
trade is checked to be one the generator emitted before it arrived, and at or after its event time."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time

import pytest

pytest.importorskip("pyflink")

from pyflink.common import Configuration, Duration, Row, Types, WatermarkStrategy  # noqa: E402
from pyflink.datastream import MapFunction, StreamExecutionEnvironment  # noqa: E402

from jobs.market_metrics import Batching, build_pipeline  # noqa: E402
from marketpulse.analytics import WINDOW_METRICS_COLUMNS, DetectorConfig  # noqa: E402
from marketpulse.analytics.multivariate import MultivariateConfig  # noqa: E402
from marketpulse.config import load_settings  # noqa: E402
from marketpulse.flink import rows  # noqa: E402
from marketpulse.flink.book import AnalyticsConfig  # noqa: E402
from marketpulse.trade import Trade  # noqa: E402
from tests.reference import reference_anomalies, reference_window_scores, reference_windows  # noqa: E402
from tests.support import local_flink_jars  # noqa: E402

pytestmark = pytest.mark.flink_local

# The job's own batching ([flink] batch_max_*): paced records make each a batch of its own.
BATCHING = Batching.from_settings(load_settings(environ={}))

BASE = 1_700_000_100_000  # a multiple of 60 s
OUT_OF_ORDERNESS_MS = 2000
DETECTOR = DetectorConfig(lookback=5, warmup=3, z_threshold=5.0, volume_min_stddev=1e-4, price_jump_pct=3.0,
                          volume_z_threshold=4.0)
# The multivariate detector scores the first size, 5 s: AAPL has four such windows, so with a warm-up of 3
# its last one is scored (MSFT's three are not).
MULTIVARIATE = MultivariateConfig(history=3, warmup=3, threshold=30.0, top_features=3, tick_size=0.01,
                                  relearn=3)
CONFIG = AnalyticsConfig(window_sizes_ms=(5_000, 10_000), grace_ms=0, detector=DETECTOR,
                         state_ttl_minutes=60, multivariate=MULTIVARIATE)


def aapl(seq: int, price: float, size: int = 100, side: str = "BUY", at_ms: int | None = None, suffix=""):
    event_time = BASE + (seq * 1000 + 500 if at_ms is None else at_ms)
    return Trade(f"AAPL-{seq:02d}{suffix}", "AAPL", price, size, side, event_time)


def msft(seq: int, at_ms: int, price: float, size: int = 50, side: str = "SELL"):
    return Trade(f"MSFT-{seq:02d}", "MSFT", price, size, side, BASE + at_ms)


# AAPL: one trade a second at +0.5 s, prices alternating 100.0 / 100.1 (a warm baseline), sizes 100 / 120.
AAPL = {seq: aapl(seq, 100.0 if seq % 2 == 0 else 100.1, 100 if seq % 2 == 0 else 120,
                  "BUY" if seq % 3 else "SELL") for seq in range(20)}
AAPL[8] = aapl(8, 110.0, 100, "BUY")                  # +10 % spike: price_zscore and price_jump
AAPL[14] = aapl(14, 100.0, 20_000, "SELL")            # volume spike: volume_zscore
TIE = aapl(3, 100.05, 10, "SELL", suffix="x")         # same event time as AAPL-03; sorts after it
MSFT = [msft(1, 300, 400.0), msft(2, 4_999, 401.0), msft(3, 5_000, 402.0, side="BUY"),  # 5000: next window
        msft(4, 12_000, 403.0), msft(5, 12_000, 399.0)]
# Behind the watermark (B+10499 when it arrives, still B+5499 eight records late): its windows are closed.
LATE_OLD = aapl(4, 55.0, 100, suffix="late", at_ms=4_000)
# Behind the watermark (B+14499 when it arrives, still B+10499 four records late) although its windows
# [10 s, 20 s) and [10 s, 15 s) are still open:
# the job's lateness is per trade (event_time <= watermark), the same rule for windows and the detector.
LATE_OPEN = aapl(10, 77.0, 100, suffix="late", at_ms=10_200)

BAD = [
    ("{not json", "malformed JSON: Expecting property name enclosed in double quotes"),
    ('{"trade_id":"X-1","symbol":"AAPL","price":1.0,"size":1,"event_time":1700000101000}',
     "missing field(s): side"),
    ('{"trade_id":"X-2","symbol":"AAPL","price":-1.0,"size":1,"side":"BUY","event_time":1700000102000}',
     "non-positive price: -1.0"),
]


def arrivals() -> list[str]:
    """Kafka values in arrival order: event-time order except where noted."""
    order: list[Trade | str] = [AAPL[0], MSFT[0], AAPL[1], BAD[0][0], AAPL[2], AAPL[3], TIE, AAPL[4], MSFT[1],
                                MSFT[2], AAPL[5],
                                AAPL[7], AAPL[6],         # 6 after 7, still ahead of the watermark
                                BAD[1][0], AAPL[8], AAPL[9], AAPL[10], AAPL[11], MSFT[3], MSFT[4], AAPL[12],
                                LATE_OLD,
                                AAPL[13], AAPL[14], AAPL[15], AAPL[16],
                                LATE_OPEN,
                                BAD[2][0], AAPL[17], AAPL[18], AAPL[19]]
    return [item if isinstance(item, str) else item.to_json() for item in order]


ON_TIME = [*AAPL.values(), TIE, *MSFT]


class Pace(MapFunction):
    def map(self, value):
        # 200 ms: at 50 ms, and once more at 100 ms (fresh36), a suite run saw LATE_OPEN reach the keyed
        # operator before the watermark it missed did (more than four records late, on a busy machine), and
        # count it on time.
        time.sleep(0.2)
        return value


def run_pipeline(values: list[str]) -> dict[str, list]:
    config = Configuration()
    config.set_string("python.executable", sys.executable)
    config.set_string("python.fn-execution.bundle.size", "1")
    config.set_string("python.fn-execution.bundle.time", "1")
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.add_jars(*local_flink_jars())  # io.marketpulse.flink.RecordBatcher
    env.set_parallelism(1)
    env.get_config().set_auto_watermark_interval(1)
    # Kafka records as the job's source gives them: Row(value bytes, partition, offset).
    records = [Row(value.encode(), 0, offset) for offset, value in enumerate(values)]
    raw = env.from_collection(records, rows.KAFKA_RECORD).map(Pace(), rows.KAFKA_RECORD)
    outputs = build_pipeline(raw, topic="trades-test", config=CONFIG, batching=BATCHING,
                             watermarks=WatermarkStrategy.for_bounded_out_of_orderness(
                                 Duration.of_millis(OUT_OF_ORDERNESS_MS)))
    # One collect for all five outputs: tag each row with its output and union them.
    names = ("windows", "anomalies", "late_trades", "dead_letters", "window_anomalies")
    tagged = [getattr(outputs, name).map(lambda row, name=name: (name, tuple(row)),
                                         Types.PICKLED_BYTE_ARRAY())
              for name in names]
    collected: dict[str, list] = {name: [] for name in names}
    with tagged[0].union(*tagged[1:]).execute_and_collect() as results:
        for name, row in results:
            collected[name].append(row)
    return collected


@pytest.fixture(scope="module")
def output() -> dict[str, list]:
    started = time.time()
    result = run_pipeline(arrivals())
    print(f"local pipeline ran in {time.time() - started:.1f}s")
    return result


def close(actual, expected):
    if isinstance(expected, float):
        return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12)
    return actual == expected


def test_window_rows_are_exactly_the_on_time_trades(output):
    columns = WINDOW_METRICS_COLUMNS
    actual = sorted((dict(zip(columns, row, strict=True)) for row in output["windows"]),
                    key=lambda row: (row["symbol"], -row["window_seconds"], row["window_start"]))
    expected = [row for size in (10, 5) for row in reference_windows(ON_TIME, size)]
    expected.sort(key=lambda row: (row["symbol"], -row["window_seconds"], row["window_start"]))
    # The shape, worked out by hand: (symbol, seconds, start offset, trades, open, close, volume).
    shape = [(row["symbol"], row["window_seconds"], row["window_start"] - BASE, row["trade_count"],
              row["open"], row["close"], row["volume"]) for row in actual]
    assert shape == [
        ("AAPL", 10, 0, 11, 100.0, 100.1, 1110),         # AAPL-00..09 (spike 110.0 inside) + the tie
        ("AAPL", 10, 10_000, 10, 100.0, 100.1, 21_000),  # with the 20 000-share volume spike
        ("AAPL", 5, 0, 6, 100.0, 100.0, 550),            # AAPL-03 (100.1) and AAPL-03x (100.05) tie at 3.5 s
        ("AAPL", 5, 5_000, 5, 100.1, 100.1, 560),        # AAPL-06 arrived after AAPL-07: still counted
        ("AAPL", 5, 10_000, 5, 100.0, 100.0, 20_440),
        ("AAPL", 5, 15_000, 5, 100.1, 100.1, 560),
        ("MSFT", 10, 0, 3, 400.0, 402.0, 150),
        ("MSFT", 10, 10_000, 2, 403.0, 399.0, 100),      # a tie at 12 s: MSFT-04 opens, MSFT-05 closes
        ("MSFT", 5, 0, 2, 400.0, 401.0, 100),            # 4.999 s is the last ms of [0, 5 s)
        ("MSFT", 5, 5_000, 1, 402.0, 402.0, 50),         # 5.000 s opens the next window
        ("MSFT", 5, 10_000, 2, 403.0, 399.0, 100),
    ]
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        mismatched = {name: (got[name], want[name]) for name in columns if not close(got[name], want[name])}
        where = f"{want['symbol']} {want['window_seconds']}s @{want['window_start']}"
        assert not mismatched, f"{where}: {mismatched}"


def test_anomalies_equal_the_reference_detector_on_every_trade_in_arrival_order(output):
    """The detector scores each valid trade as it arrives, late ones included: AAPL-06 after AAPL-07, so the
    spike AAPL-08 is measured from AAPL-06's 100.0, and both late prints (55 and 77) are price anomalies.
    The two ties are price_zscore anomalies too: a print at the same instant as the one before it has only the
    one-tick floor as its spread, so AAPL-03x (100.05 against 100.1: 5 ticks, z = -5.001) and MSFT-05 (399
    against 403) are each more than 5 ticks away from a price of that very millisecond."""
    assert sorted((row[0], row[1]) for row in output["anomalies"]) == [
        ("AAPL-03x", "price_zscore"), ("AAPL-04late", "price_jump"), ("AAPL-04late", "price_zscore"),
        ("AAPL-08", "price_jump"), ("AAPL-08", "price_zscore"), ("AAPL-10late", "price_jump"),
        ("AAPL-10late", "price_zscore"), ("AAPL-14", "volume_zscore"), ("MSFT-05", "price_zscore")]
    bad = {value for value, _reason in BAD}
    valid = [Trade(**json.loads(value)) for value in arrivals() if value not in bad]
    expected = {}
    for symbol in ("AAPL", "MSFT"):
        for trade_id, rule, statistic in reference_anomalies(
                [trade for trade in valid if trade.symbol == symbol], lookback=DETECTOR.lookback,
                warmup=DETECTOR.warmup, z_threshold=DETECTOR.z_threshold,
                price_jump_pct=DETECTOR.price_jump_pct, volume_z_threshold=DETECTOR.volume_z_threshold,
                volume_min_stddev=DETECTOR.volume_min_stddev, tick_size=DETECTOR.tick_size,
                min_stddev_ticks=DETECTOR.min_stddev_ticks):
            expected[(trade_id, rule)] = statistic
    assert {(row[0], row[1]) for row in output["anomalies"]} == set(expected)
    by_id = {trade.trade_id: trade for trade in valid}
    for row in output["anomalies"]:
        trade_id, rule, symbol, event_time, price, size, z_score, _mean, _stddev, detected_at = row
        trade = by_id[trade_id]
        assert (symbol, event_time, price, size) == (trade.symbol, trade.event_time, trade.price, trade.size)
        assert math.isclose(z_score, expected[(trade_id, rule)], rel_tol=1e-9)
        assert abs(detected_at - time.time() * 1000) < 600_000
    jump = next(row for row in output["anomalies"] if row[:2] == ("AAPL-08", "price_jump"))
    assert math.isclose(jump[6], (110.0 / 100.0 - 1) * 100, rel_tol=1e-12)  # measured from AAPL-06


def test_late_trades_carry_the_watermark_they_missed(output):
    late = sorted(output["late_trades"])
    assert [row[:6] for row in late] == [
        (LATE_OLD.trade_id, "AAPL", 55.0, 100, "BUY", BASE + 4_000),
        (LATE_OPEN.trade_id, "AAPL", 77.0, 100, "BUY", BASE + 10_200),
    ]
    values = arrivals()
    for row in late:
        before = values[:values.index(next(value for value in values if row[0] in value))]
        emitted = set()
        highest = None
        for value in before:
            if value.startswith('{"trade_id"') and '"side"' in value and '"price":-' not in value:
                event_time = Trade(**json.loads(value)).event_time
                highest = event_time if highest is None else max(highest, event_time)
                emitted.add(highest - OUT_OF_ORDERNESS_MS - 1)
        assert row[6] in emitted and row[6] >= row[5], (row, sorted(emitted)[-3:])


def test_bad_records_become_dead_letters_with_the_payload_hash(output):
    # Row(topic, partition, offset, payload, payload_sha1, reason, received_at)
    dead = sorted(output["dead_letters"], key=lambda row: row[2])
    offsets = {value: offset for offset, value in enumerate(arrivals())}
    expected = sorted(BAD, key=lambda bad: offsets[bad[0]])
    assert [(row[0], row[1], row[2], row[3], row[5]) for row in dead] == [
        ("trades-test", 0, offsets[payload], payload.encode(), reason) for payload, reason in expected]
    assert [row[4] for row in dead] == [hashlib.sha1(payload.encode()).hexdigest() for payload, _ in expected]
    assert all(abs(row[6] - time.time() * 1000) < 600_000 for row in dead)


def test_the_multivariate_detector_scores_the_closed_windows_of_the_first_size(output):
    """AAPL's fourth 5 s window [15 s, 20 s), scored against its first three by the reference recomputation
    over the reference windows of the on-time trades. Two of those three hold the injected anomalies (the
    110.0 spike in [5 s, 10 s), the 20,000 shares in [10 s, 15 s)); the median keeps them out of the
    baseline's centre, so the ordinary fourth window scores 0.49 (only its VWAP deviation differs), not an
    anomaly."""
    aapl_windows = [row for row in reference_windows(ON_TIME, 5) if row["symbol"] == "AAPL"]
    expected = reference_window_scores(aapl_windows, history=MULTIVARIATE.history, warmup=MULTIVARIATE.warmup,
                                       threshold=MULTIVARIATE.threshold, tick_size=MULTIVARIATE.tick_size)
    assert [(row["window_start"] - BASE, row["anomalous"], round(row["score"], 2)) for row in expected] == \
        [(15_000, False, 0.49)]
    [want] = expected
    [got] = output["window_anomalies"]
    symbol, seconds, start, end, score, threshold, anomalous, top_features = got
    assert (symbol, seconds, start, end, threshold, anomalous) == \
        ("AAPL", 5, want["window_start"], want["window_end"], 30.0, want["anomalous"])
    assert math.isclose(score, want["score"], rel_tol=1e-9)
    assert top_features == ", ".join(f"{name} {z:+.2f}" for name, z in want["z"].items())
