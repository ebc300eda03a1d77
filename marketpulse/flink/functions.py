"""The two Python functions of the DataStream job, thin wrappers around marketpulse.trade,
marketpulse.analytics and marketpulse.flink.book. Each record shape is written after the step that makes
it."""

from __future__ import annotations

import hashlib
import time

from pyflink.common import Row, Types
from pyflink.common.time import Time
from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction, RuntimeContext
from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor

from marketpulse.analytics import WINDOW_METRICS_COLUMNS
from marketpulse.flink import rows
from marketpulse.flink.book import (
    AnalyticsConfig,
    DetectorSlot,
    SymbolBook,
    WindowModelSlot,
    is_late,
    window_close_time,
)
from marketpulse.trade import InvalidTrade, Trade, heartbeat_time, parse_trade

DEAD_LETTERS = OutputTag("dead-letters", rows.DEAD_LETTER)
LATE_TRADES = OutputTag("late-trades", rows.LATE_TRADE)
ANOMALIES = OutputTag("anomalies", rows.ANOMALY)
WINDOW_ANOMALIES = OutputTag("window-anomalies", rows.WINDOW_ANOMALY)


def payload_sha1(payload: bytes | None) -> str | None:
    """Hex SHA-1 of the raw value, as the generator labels bad records; None for a tombstone."""
    return None if payload is None else hashlib.sha1(payload).hexdigest()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# The key of a heartbeat's row between ParseTrades and TradeAnalytics: no trade has it (not a valid symbol).
HEARTBEAT_SYMBOL = ""


class ParseTrades(ProcessFunction):
    """Kafka record -> (Row(symbol, trade), event_time); a bad record -> DEAD_LETTERS, counted, never fatal.

    Input: rows.KAFKA_RECORD, Row(value bytes or None, partition, offset). parse_trade raises nothing but
    InvalidTrade for any value, and its reasons are storable text (marketpulse/trade.py)."""

    def __init__(self, topic: str):
        self.topic = topic
        self.bad_records = self.heartbeats = None

    def open(self, runtime_context: RuntimeContext):
        metrics = runtime_context.get_metrics_group()
        self.bad_records = metrics.counter("badRecords")
        self.heartbeats = metrics.counter("heartbeats")

    def process_element(self, record, ctx):
        payload, partition, offset = record
        heartbeat = heartbeat_time(payload)
        if heartbeat is not None:
            # Moves this partition's watermark (the next operator assigns it) and nothing else: the keyed
            # operator drops the HEARTBEAT_SYMBOL row (marketpulse/trade.py, heartbeat_value).
            self.heartbeats.inc()
            yield Row(HEARTBEAT_SYMBOL, Row("", HEARTBEAT_SYMBOL, 0.0, 0, "", heartbeat)), heartbeat
            return
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
    """Per symbol: the anomaly detector on arrival, late routing and final event-time tumbling windows.

    State per symbol: `book` (a marketpulse.flink.book.SymbolBook: open windows and the last close timer
    fired, what survives a restore), `detector` (a DetectorSlot, with a processing-time TTL) and
    `window_model` (a WindowModelSlot: the multivariate detector's last windows, same TTL). All are kept
    as live objects that PyFlink's state cache returns as they are until the bundle ends, where they are
    pickled once as plain tuples: no per-trade (de)serialisation. Main output: window rows; side outputs
    ANOMALIES, LATE_TRADES and WINDOW_ANOMALIES (each closed window of the scored size, scored in the timer
    that closes it: no operator, shuffle or Python crossing of its own). The rules:
    marketpulse/flink/book.py."""

    def __init__(self, config: AnalyticsConfig):
        self.config = config
        self.book_state = self.detector_state = self.window_model_state = None
        self.late_trades = self.anomalies = self.recovered_closes = None
        self.newest_event_time = self.watermark = None

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
        if self.config.multivariate is not None:
            window_model = ValueStateDescriptor("window_model", Types.PICKLED_BYTE_ARRAY())
            window_model.enable_time_to_live(ttl)
            self.window_model_state = runtime_context.get_state(window_model)
        self.book_state = runtime_context.get_state(ValueStateDescriptor("book", Types.PICKLED_BYTE_ARRAY()))
        metrics = runtime_context.get_metrics_group()
        self.late_trades = metrics.counter("lateTrades")
        self.anomalies = metrics.counter("anomalies")
        # Windows closed by a later timer because their own was not in the restored checkpoint.
        self.recovered_closes = metrics.counter("recoveredWindowCloses")
        # How far behind the market the operator is, in the web UI and REST (0 until the first trade):
        # the detector (wall clock - newest event time scored) and the windows (wall clock - watermark).
        metrics.gauge("eventTimeLagMs", lambda: lag_ms(self.newest_event_time))
        metrics.gauge("watermarkLagMs", lambda: lag_ms(self.watermark))

    def _book(self, ctx) -> SymbolBook:
        stored = self.book_state.value()
        book = SymbolBook.from_state(stored)
        if book is not stored and book.windows:
            # Decoded, not live: the first sight of this symbol in this worker's life (a restore, a rescale).
            # Its close timers may not have reached the checkpoint (FLINK-37084): register them again.
            for close_time in book.close_times(self.config):
                ctx.timer_service().register_event_time_timer(close_time)
        return book

    def process_element(self, trade, ctx):
        # trade: Row(trade_id, symbol, price, size, side, event_time)
        if trade[1] == HEARTBEAT_SYMBOL:
            return  # its event time has done its work upstream (ParseTrades)
        trade = Trade(*trade)
        config = self.config
        slot = DetectorSlot.from_state(config.detector, self.detector_state.value())
        found = slot.detector.push(trade)
        self.detector_state.update(slot)
        if found:
            detected_at = now_ms()
            for anomaly in found:
                self.anomalies.inc()
                # Row(trade_id, rule, symbol, event_time, price, size, z_score, mean, stddev, detected_at)
                yield ANOMALIES, Row(anomaly.trade_id, anomaly.rule, anomaly.symbol, anomaly.event_time,
                                     anomaly.price, anomaly.size, anomaly.z_score, anomaly.mean,
                                     anomaly.stddev, detected_at)
        if self.newest_event_time is None or trade.event_time > self.newest_event_time:
            self.newest_event_time = trade.event_time
        book = self._book(ctx)
        self.watermark = ctx.timer_service().current_watermark()
        watermark = book.effective_watermark(self.watermark)
        if is_late(trade.event_time, watermark, config.grace_ms):
            self.late_trades.inc()
            yield LATE_TRADES, Row(*trade_row(trade), watermark)
            return
        for close_time in book.add(trade, config):
            ctx.timer_service().register_event_time_timer(close_time)
        self.book_state.update(book)

    def on_timer(self, timestamp, ctx):
        book = self._book(ctx)
        windows = book.close_due(ctx.get_current_key(), timestamp, self.config)
        if windows is None:
            return
        self.book_state.update(book)
        for window in windows:
            if window_close_time(window.window_end, self.config.grace_ms) != timestamp:
                self.recovered_closes.inc()
            # Row(symbol, window_seconds, window_start, window_end, open, ..., stddev_price)
            yield Row(*(getattr(window, name) for name in WINDOW_METRICS_COLUMNS))
        size_ms = self.config.scored_window_ms
        if self.window_model_state is not None and any(window.window_end - window.window_start == size_ms
                                                       for window in windows):
            slot = WindowModelSlot.from_state(self.config.multivariate, self.window_model_state.value())
            scores = slot.score(windows, size_ms)
            self.window_model_state.update(slot)
            for scored in scores:
                # Row(symbol, window_seconds, window_start, window_end, score, threshold, anomalous,
                #     top_features)
                yield WINDOW_ANOMALIES, Row(scored.symbol, scored.window_seconds, scored.window_start,
                                            scored.window_end, scored.score, scored.threshold,
                                            scored.anomalous, scored.top_features)


def lag_ms(event_time: int | None) -> int:
    """Wall clock minus an event time (or watermark); 0 while there is none yet."""
    return 0 if event_time is None or event_time < 0 else max(0, now_ms() - event_time)


def trade_row(trade: Trade) -> tuple:
    return trade.trade_id, trade.symbol, trade.price, trade.size, trade.side, trade.event_time
