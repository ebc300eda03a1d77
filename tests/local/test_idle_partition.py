"""Source idleness against completeness, on a local mini-cluster: the interleaving behind the outage chaos
test's rare `different` windows of the DataStream job (tests/chaos/test_outages.py).

While the Kafka broker is down no partition delivers anything, and with source idleness ([windows]
idleness_seconds > 0) every partition's chain is marked idle. When the broker serves again, the partitions
whose consumers reconnect first move the watermark alone, and the trades of a partition whose consumer comes
back a moment later are behind it: late_trades, in no window, although the producer sent every partition in
order. Their windows then hold fewer trades than the reference, so their low, vwap, ... differ (or the window
is missing). No trade is lost or counted twice; the windows are not those of an uninterrupted run. With
idleness off, the silent partition holds the watermark back and every trade is on time.

Two partitions, one symbol each, trading twice a second of event time over the same 40 s. The first 20 s of
both arrive interleaved, one record every 25 ms of wall time; then nothing for 1.5 s (the outage); then
partition 0's last 20 s, then partition 1's (its consumer reconnected 1 s later); then trades an hour later on
each partition that close every window (the chaos test's flush trades; they also keep the end of this bounded
input away from the trades under test). The idleness timeout is 0.5 s, the watermark interval 1 ms."""

from __future__ import annotations

import math
import sys
import time

import pytest

pytest.importorskip("pyflink")

from pyflink.common import Configuration, Duration, Row, Types, WatermarkStrategy  # noqa: E402
from pyflink.datastream import MapFunction, StreamExecutionEnvironment  # noqa: E402

from jobs.market_metrics import Batching, build_pipeline  # noqa: E402
from marketpulse.analytics import WINDOW_METRICS_COLUMNS, DetectorConfig  # noqa: E402
from marketpulse.config import load_settings  # noqa: E402
from marketpulse.flink import rows  # noqa: E402
from marketpulse.flink.book import AnalyticsConfig  # noqa: E402
from marketpulse.trade import Trade  # noqa: E402
from tests.reference import reference_windows  # noqa: E402
from tests.support import local_flink_jars  # noqa: E402

pytestmark = pytest.mark.flink_local

# The job's own batching ([flink] batch_max_*): paced records make each a batch of its own.
BATCHING = Batching.from_settings(load_settings(environ={}))

BASE = 1_700_000_100_000  # a multiple of 60 s
OUT_OF_ORDERNESS_MS = 2000
DETECTOR = DetectorConfig(lookback=5, warmup=3, z_threshold=5.0, volume_min_stddev=1e-4, price_jump_pct=3.0,
                          volume_z_threshold=4.0)
CONFIG = AnalyticsConfig(window_sizes_ms=(10_000,), grace_ms=0, detector=DETECTOR, state_ttl_minutes=60)
SYMBOLS = ("AAPL", "MSFT")
# Their Kafka partitions: key_by sends them to subtasks 0 and 1 of 2 (OnePartitionPerSubtask checks it), so
# each source-chain subtask sees exactly one partition, as in the job.
PARTITIONS = (0, 2)
FLUSH_SYMBOL = "ZZFLUSH"
HALF, OUTAGE_S, PACE_S = 40, 1.5, 0.025  # trades per partition before the outage, its length, the pace


def trades(symbol: str) -> list[Trade]:
    return [Trade(f"{symbol}-{seq:03d}", symbol, 100.0 + (seq * 37 % 11) / 100, 10 + seq % 5,
                  "BUY" if seq % 2 else "SELL", BASE + seq * 500 + 100) for seq in range(80)]


def flush(partition: int) -> list[Trade]:
    return [Trade(f"FLUSH-{partition}-{seq}", FLUSH_SYMBOL, 1.0, 1, "BUY", BASE + 3_600_000 + seq)
            for seq in range(20)]


class Pace(MapFunction):
    """25 ms before each record; the outage before partition 0's first record after it."""

    def map(self, value):
        time.sleep(OUTAGE_S if (value[1], value[2]) == (PARTITIONS[0], HALF) else PACE_S)
        return value


class OnePartitionPerSubtask(MapFunction):
    """Fails the job unless partition PARTITIONS[i] reaches subtask i (the routing the test relies on)."""

    def open(self, runtime_context):
        self.subtask = runtime_context.get_index_of_this_subtask()

    def map(self, value):
        if PARTITIONS.index(value[1]) != self.subtask:
            raise RuntimeError(f"partition {value[1]} reached subtask {self.subtask}")
        return value


def run(idleness_ms: int) -> tuple[list[dict], list[tuple]]:
    """(window rows of the real symbols, late trade rows) of build_pipeline on the paced records."""
    config = Configuration()
    config.set_string("python.executable", sys.executable)
    config.set_string("python.fn-execution.bundle.size", "1")
    config.set_string("python.fn-execution.bundle.time", "1")
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.add_jars(*local_flink_jars())  # io.marketpulse.flink.RecordBatcher
    env.set_parallelism(1)
    env.get_config().set_auto_watermark_interval(1)
    first, second = ([(partition, trade) for partition, symbol in zip(PARTITIONS, SYMBOLS, strict=True)
                      for trade in trades(symbol)[part]] for part in (slice(0, HALF), slice(HALF, None)))
    in_order = [pair for both in zip(first[:HALF], first[HALF:], strict=True) for pair in both]  # interleaved
    in_order += second  # partition 0's second half, then partition 1's
    in_order += [(partition, trade) for partition in PARTITIONS for trade in flush(partition)]
    offsets = dict.fromkeys(PARTITIONS, 0)
    records = []
    for partition, trade in in_order:
        records.append(Row(trade.to_json().encode(), partition, offsets[partition]))
        offsets[partition] += 1
    raw = (env.from_collection(records, rows.KAFKA_RECORD).map(Pace(), rows.KAFKA_RECORD)
           .key_by(lambda record: record[1], Types.INT())
           .map(OnePartitionPerSubtask(), rows.KAFKA_RECORD).set_parallelism(len(PARTITIONS)))
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(OUT_OF_ORDERNESS_MS))
    if idleness_ms:
        strategy = strategy.with_idleness(Duration.of_millis(idleness_ms))
    outputs = build_pipeline(raw, topic="trades-test", config=CONFIG, batching=BATCHING, watermarks=strategy,
                             source_parallelism=len(PARTITIONS))
    tagged = [getattr(outputs, name).map(lambda row, name=name: (name, tuple(row)),
                                         Types.PICKLED_BYTE_ARRAY())
              for name in ("windows", "late_trades")]
    windows, late = [], []
    with tagged[0].union(tagged[1]).execute_and_collect() as results:
        for name, row in results:
            if name == "late_trades":
                late.append(row)
            elif row[0] != FLUSH_SYMBOL:
                windows.append(dict(zip(WINDOW_METRICS_COLUMNS, row, strict=True)))
    return sorted(windows, key=lambda row: (row["symbol"], row["window_start"])), late


def differences(windows: list[dict]) -> list[tuple]:
    """(symbol, window_start, column, got, reference) of every column that differs from the reference."""
    reference = {(row["symbol"], row["window_start"]): row
                 for row in reference_windows([*trades("AAPL"), *trades("MSFT")], 10)}
    got = {(row["symbol"], row["window_start"]): row for row in windows}
    found = [(*key, "window", key in got, True) for key in reference if key not in got]
    for key, row in got.items():
        want = reference.get(key, {})
        found += [(*key, column, row[column], want.get(column)) for column in WINDOW_METRICS_COLUMNS
                  if not (isinstance(row[column], float) and column in want
                          and math.isclose(row[column], want[column], rel_tol=1e-9))
                  and row[column] != want.get(column)]
    return found


def test_after_an_outage_the_partition_that_resumes_last_is_late_and_its_windows_come_out_short():
    windows, late = run(idleness_ms=500)
    late_ids = {row[0] for row in late}
    msft_late = sorted(trade_id for trade_id in late_ids if trade_id.startswith("MSFT"))
    print(f"\nidleness 0.5 s: {len(late)} late trades, {len(msft_late)} of MSFT: {msft_late[:2]} ... "
          f"{msft_late[-2:]}")
    assert all(row[5] <= row[6] for row in late)
    # Partition 1's trades after the outage met partition 0's watermark (39 600 - 2001 ms once AAPL-079 is
    # read): at least those up to MSFT-074 (37 100 ms) are late. Nothing of partition 0, nothing before it.
    assert {f"MSFT-{seq:03d}" for seq in range(HALF, 75)} <= late_ids
    assert all(trade_id.startswith(("MSFT", f"FLUSH-{PARTITIONS[1]}-")) for trade_id in late_ids)
    assert not {f"MSFT-{seq:03d}" for seq in range(HALF)} & late_ids
    counts = {(row["symbol"], row["window_start"]): row["trade_count"] for row in windows}
    assert [count for (symbol, _), count in counts.items() if symbol == "AAPL"] == [20, 20, 20, 20]
    assert sum(count for (symbol, _), count in counts.items() if symbol == "MSFT") == 80 - len(msft_late)
    found = differences(windows)
    assert found and {symbol for symbol, *_ in found} == {"MSFT"}


def test_with_idleness_off_the_silent_partition_holds_the_watermark_and_nothing_is_late():
    windows, late = run(idleness_ms=0)
    assert late == []
    assert differences(windows) == []
    assert len(windows) == 8
