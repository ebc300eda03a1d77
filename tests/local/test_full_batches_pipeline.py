"""The DataStream job's topology with full batches (flink-ext RecordBatcher, ParseTrades' per-symbol lists):
test_market_metrics_pipeline.py paces its records so that each is a batch of its own; here 3,000 records go
in unpaced, in batches of up to 64 records and 4 KiB, and every window, anomaly and dead letter must still be
exactly the reference's."""

from __future__ import annotations

import random
import sys

import pytest

pytest.importorskip("pyflink")

from pyflink.common import Configuration, Duration, Row, Types, WatermarkStrategy  # noqa: E402
from pyflink.datastream import StreamExecutionEnvironment  # noqa: E402

from jobs.market_metrics import Batching, build_pipeline  # noqa: E402
from marketpulse.analytics import WINDOW_METRICS_COLUMNS, DetectorConfig  # noqa: E402
from marketpulse.flink import rows  # noqa: E402
from marketpulse.flink.book import AnalyticsConfig  # noqa: E402
from marketpulse.trade import Trade  # noqa: E402
from tests.reference import reference_anomalies, reference_windows  # noqa: E402
from tests.support import local_flink_jars  # noqa: E402

pytestmark = pytest.mark.flink_local

BASE = 1_700_000_040_000  # a multiple of 60 s
DETECTOR = DetectorConfig(lookback=20, warmup=10, z_threshold=4.0, volume_min_stddev=1e-4, price_jump_pct=2.0,
                          volume_z_threshold=4.0)
CONFIG = AnalyticsConfig(window_sizes_ms=(10_000, 5_000), grace_ms=0, detector=DETECTOR, state_ttl_minutes=60)
BATCHING = Batching(max_records=64, max_bytes=4096, max_delay_ms=5)
SYMBOLS = ("AAA", "BBB", "CCC")


def values() -> tuple[list[bytes | None], list[Trade], dict[int, bytes | None]]:
    """3,000 records of one partition: trades of three symbols in event-time order (every 20th a spike),
    a bad record every 97th and a tombstone every 389th; (values, valid trades, bad values by offset)."""
    rng = random.Random(7)
    prices = dict.fromkeys(SYMBOLS, 100.0)
    out, trades, bad = [], [], {}
    for offset in range(3_000):
        if offset % 97 == 50 or offset % 389 == 200:
            value = None if offset % 389 == 200 else b'{"trade_id":"X","symbol":"AAA"}'
            bad[offset] = value
            out.append(value)
            continue
        symbol = SYMBOLS[rng.randrange(3)]
        prices[symbol] = round(prices[symbol] * (1 + rng.gauss(0, 0.001)), 4)
        price = prices[symbol] * (1.2 if offset % 20 == 0 else 1.0)
        side = rng.choice(("BUY", "SELL"))
        trade = Trade(f"T-{offset}", symbol, round(price, 4), rng.randint(1, 300), side, BASE + offset * 25)
        trades.append(trade)
        out.append(trade.to_json().encode())
    return out, trades, bad


@pytest.fixture(scope="module")
def run():
    records, trades, bad = values()
    config = Configuration()
    config.set_string("python.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.add_jars(*local_flink_jars())  # io.marketpulse.flink.RecordBatcher
    env.set_parallelism(1)
    raw = env.from_collection([Row(value, 0, offset) for offset, value in enumerate(records)],
                              rows.KAFKA_RECORD)
    outputs = build_pipeline(raw, topic="trades-test", config=CONFIG, batching=BATCHING,
                             watermarks=WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(2000)))
    names = ("windows", "anomalies", "late_trades", "dead_letters")
    tagged = [getattr(outputs, name).map(lambda row, name=name: (name, tuple(row)),
                                         Types.PICKLED_BYTE_ARRAY()) for name in names]
    collected: dict[str, list] = {name: [] for name in names}
    with tagged[0].union(*tagged[1:]).execute_and_collect() as results:
        for name, row in results:
            collected[name].append(row)
    return collected, trades, bad


def test_every_window_is_the_reference_window(run):
    output, trades, _bad = run
    assert output["late_trades"] == []  # in event-time order: nothing can be late, batches or not
    key = lambda row: (row["symbol"], row["window_seconds"], row["window_start"])  # noqa: E731
    actual = sorted((dict(zip(WINDOW_METRICS_COLUMNS, row, strict=True)) for row in output["windows"]),
                    key=key)
    expected = sorted((row for size in (10, 5) for row in reference_windows(trades, size)), key=key)
    assert len(actual) == len(expected) == 69  # 3 symbols x (15 of 5 s + 8 of 10 s) over 75 s
    for got, want in zip(actual, expected, strict=True):
        for name in WINDOW_METRICS_COLUMNS:
            if isinstance(want[name], float):
                assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), (key(want), name)
            else:
                assert got[name] == want[name], (key(want), name)


def test_anomalies_are_the_reference_detectors_in_arrival_order(run):
    output, trades, _bad = run
    expected = set()
    for symbol in SYMBOLS:
        expected |= {(trade_id, rule) for trade_id, rule, _statistic in reference_anomalies(
            [trade for trade in trades if trade.symbol == symbol], lookback=DETECTOR.lookback,
            warmup=DETECTOR.warmup, z_threshold=DETECTOR.z_threshold, price_jump_pct=DETECTOR.price_jump_pct,
            volume_z_threshold=DETECTOR.volume_z_threshold, volume_min_stddev=DETECTOR.volume_min_stddev,
            tick_size=DETECTOR.tick_size, min_stddev_ticks=DETECTOR.min_stddev_ticks)}
    got = [(row[0], row[1]) for row in output["anomalies"]]
    assert len(got) == len(set(got)) and set(got) == expected and len(expected) > 100


def test_each_bad_record_is_one_dead_letter_at_its_own_offset(run):
    output, _trades, bad = run
    # Row(topic, partition, offset, payload, payload_sha1, reason, received_at)
    assert sorted((row[2], row[3]) for row in output["dead_letters"]) == sorted(bad.items())
