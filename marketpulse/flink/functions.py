"""The two Python functions of the DataStream job, thin wrappers around marketpulse.trade,
marketpulse.analytics and marketpulse.flink.release. Each record shape is written after the step that makes
it."""

from __future__ import annotations

import hashlib
import time

from pyflink.common import Row, Types
from pyflink.common.time import Time
from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, StateTtlConfig, ValueStateDescriptor

from marketpulse.analytics import WINDOW_METRICS_COLUMNS, AnomalyDetector
from marketpulse.flink import rows
from marketpulse.flink.release import (
    NEW_CLOCK,
    AnalyticsConfig,
    effective_watermark,
    is_late,
    release,
    release_time,
    take_due,
    with_due,
)
from marketpulse.trade import InvalidTrade, parse_trade

DEAD_LETTERS = OutputTag("dead-letters", rows.DEAD_LETTER)
LATE_TRADES = OutputTag("late-trades", rows.LATE_TRADE)
ANOMALIES = OutputTag("anomalies", rows.ANOMALY)


def payload_sha1(payload: bytes | None) -> str | None:
    """Hex SHA-1 of the raw value, as the generator labels bad records; None for a tombstone."""
    return None if payload is None else hashlib.sha1(payload).hexdigest()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ParseTrades(ProcessFunction):
    """Kafka record -> (Row(symbol, trade), event_time); a bad record -> DEAD_LETTERS, counted, never fatal.

    Input: rows.KAFKA_RECORD, Row(value bytes or None, partition, offset). parse_trade raises nothing but
    InvalidTrade for any value, and its reasons are storable text (marketpulse/trade.py)."""

    def __init__(self, topic: str):
        self.topic = topic
        self.bad_records = None

    def open(self, runtime_context: RuntimeContext):
        self.bad_records = runtime_context.get_metrics_group().counter("badRecords")

    def process_element(self, record, ctx):
        payload, partition, offset = record
        try:
            trade = parse_trade(payload)
        except InvalidTrade as err:
            self.bad_records.inc()
            # Row(topic, partition, offset, payload, payload_sha1, reason, received_at)
            yield DEAD_LETTERS, Row(self.topic, partition, offset, payload, payload_sha1(payload), str(err),
                                    now_ms())
            return
        # (Row(symbol, Row(trade_id, symbol, price, size, side, event_time)), event_time)
        yield Row(trade.symbol, Row(trade.trade_id, trade.symbol, trade.price, trade.size, trade.side,
                                    trade.event_time)), trade.event_time


class TradeAnalytics(KeyedProcessFunction):
    """Per symbol: late routing, event-time ordered release, tumbling windows and the anomaly detector.

    State per symbol: `pending` (release time -> trades waiting for the watermark), `clock` (the release
    time fired last and the release times waiting: what survives a restore, see release.py), `open_windows`
    (one accumulator per window size) and `detector` (AnomalyDetector.to_state(), with a processing-time TTL).
    Main output: window rows; side outputs LATE_TRADES and ANOMALIES. See marketpulse/flink/release.py."""

    def __init__(self, config: AnalyticsConfig):
        self.config = config
        self.pending = self.clock = self.open_windows = self.detector_state = None
        self.late_trades = self.anomalies = self.recovered_releases = None

    def open(self, runtime_context: RuntimeContext):
        ttl = (StateTtlConfig.new_builder(Time.minutes(self.config.state_ttl_minutes))
               .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
               # NeverReturnExpired would switch off PyFlink's state cache for every state of the operator;
               # an expired-but-not-yet-removed detector is harmless (it is just an older baseline).
               .set_state_visibility(StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp)
               .build())
        detector = ValueStateDescriptor("detector", Types.PICKLED_BYTE_ARRAY())
        detector.enable_time_to_live(ttl)
        self.detector_state = runtime_context.get_state(detector)
        self.open_windows = runtime_context.get_state(
            ValueStateDescriptor("open_windows", Types.PICKLED_BYTE_ARRAY()))
        self.pending = runtime_context.get_map_state(
            MapStateDescriptor("pending", Types.LONG(), Types.PICKLED_BYTE_ARRAY()))
        self.clock = runtime_context.get_state(ValueStateDescriptor("clock", Types.PICKLED_BYTE_ARRAY()))
        metrics = runtime_context.get_metrics_group()
        self.late_trades = metrics.counter("lateTrades")
        self.anomalies = metrics.counter("anomalies")
        # Slots released by a later timer because their own was not in the restored checkpoint.
        self.recovered_releases = metrics.counter("recoveredReleases")

    def process_element(self, trade, ctx):
        # trade: Row(trade_id, symbol, price, size, side, event_time)
        trade_id, symbol, price, size, side, event_time = trade
        clock = self.clock.value() or NEW_CLOCK
        watermark = effective_watermark(ctx.timer_service().current_watermark(), clock)
        config = self.config
        if is_late(event_time, watermark, config.allowed_lateness_ms):
            self.late_trades.inc()
            yield LATE_TRADES, Row(trade_id, symbol, price, size, side, event_time, watermark)
            return
        due = release_time(event_time, config.allowed_lateness_ms, config.release_interval_ms)
        waiting = self.pending.get(due)
        if waiting is None:
            waiting = []
            self.clock.update(with_due(clock, due))
            ctx.timer_service().register_event_time_timer(due)
        waiting.append((event_time, trade_id, price, size, side))
        self.pending.put(due, waiting)

    def on_timer(self, timestamp, ctx):
        symbol = ctx.get_current_key()
        dues, clock = take_due(self.clock.value() or NEW_CLOCK, timestamp)
        if clock is None:
            return
        self.clock.update(clock)
        trades = []
        for due in dues:
            trades += self.pending.get(due) or []
            self.pending.remove(due)
            if due != timestamp:
                self.recovered_releases.inc()
        open_windows = self.open_windows.value() or {}
        if not trades and not open_windows:
            return
        detector = None
        if trades:
            detector = AnomalyDetector.from_state(self.config.detector, self.detector_state.value())
        released = release(symbol, trades or [], open_windows, detector, self.config, timestamp)
        if trades:
            self.detector_state.update(detector.to_state())
        self.open_windows.update(open_windows)
        for due in released.timers:
            if due > timestamp:
                ctx.timer_service().register_event_time_timer(due)
        detected_at = now_ms()
        for anomaly in released.anomalies:
            self.anomalies.inc()
            # Row(trade_id, rule, symbol, event_time, price, size, z_score, mean, stddev, detected_at)
            yield ANOMALIES, Row(anomaly.trade_id, anomaly.rule, anomaly.symbol, anomaly.event_time,
                                 anomaly.price, anomaly.size, anomaly.z_score, anomaly.mean, anomaly.stddev,
                                 detected_at)
        for window in released.windows:
            # Row(symbol, window_seconds, window_start, window_end, open, ..., stddev_price)
            yield Row(*(getattr(window, name) for name in WINDOW_METRICS_COLUMNS))
