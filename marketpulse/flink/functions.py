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


# The key of a heartbeat-only batch between ParseTrades and TradeAnalytics: no trade has it (not a valid
# symbol).
HEARTBEAT_SYMBOL = ""


def unpack_records(values: bytes, offsets: list[int]):
    """(offset, value or None) of each record of a rows.KAFKA_RECORD_BATCH, in order."""
    position = 0
    for offset in offsets:
        length = int.from_bytes(values[position:position + 4], "big", signed=True)
        position += 4
        if length < 0:
            yield offset, None
        else:
            yield offset, values[position:position + length]
            position += length


class ParseTrades(ProcessFunction):
    """A batch of Kafka records of one partition -> per symbol, its valid trades in arrival order, stamped
    for the watermark; a bad record -> DEAD_LETTERS, counted, never fatal.

    Input: rows.KAFKA_RECORD_BATCH (io.marketpulse.flink.RecordBatcher). parse_trade raises nothing but
    InvalidTrade for any value, and its reasons are storable text (marketpulse/trade.py).

    Event time: every element but the batch's last carries the batch's EARLIEST event time (of its trades
    and heartbeats), the last one its latest. The watermark generator behind this operator only ever takes
    the maximum, so no watermark made between two elements of a batch can pass a trade of the same batch:
    each trade is judged against a watermark of the batches before its own, as if the periodic watermark had
    fired between batches (marketpulse/flink/book.py, late semantics)."""

    def __init__(self, topic: str):
        self.topic = topic
        self.bad_records = self.heartbeats = None

    def open(self, runtime_context: RuntimeContext):
        metrics = runtime_context.get_metrics_group()
        self.bad_records = metrics.counter("badRecords")
        self.heartbeats = metrics.counter("heartbeats")

    def process_element(self, batch, ctx):
        values, partition, offsets = batch
        by_symbol: dict[str, list[tuple]] = {}
        earliest = latest = None
        for offset, payload in unpack_records(values, offsets):
            event_time = heartbeat_time(payload)
            if event_time is not None:
                # Moves this partition's watermark (the next operator assigns it) and nothing else.
                self.heartbeats.inc()
            else:
                try:
                    trade = parse_trade(payload)
                except InvalidTrade as err:
                    self.bad_records.inc()
                    # Row(topic, partition, offset, payload, payload_sha1, reason, received_at)
                    yield DEAD_LETTERS, Row(self.topic, partition, offset, payload, payload_sha1(payload),
                                            str(err), now_ms())
                    continue
                event_time = trade.event_time
                trades = by_symbol.get(trade.symbol)
                if trades is None:
                    trades = by_symbol[trade.symbol] = []
                trades.append((trade.trade_id, trade.symbol, trade.price, trade.size, trade.side, event_time))
            if earliest is None:
                earliest = latest = event_time
            elif event_time < earliest:
                earliest = event_time
            elif event_time > latest:
                latest = event_time
        if latest is None:
            return  # bad records only
        if not by_symbol:
            by_symbol[HEARTBEAT_SYMBOL] = []
        last = len(by_symbol) - 1
        # (Row(symbol, [(trade_id, symbol, price, size, side, event_time), ...]), event_time)
        for index, item in enumerate(by_symbol.items()):
            yield Row(*item), latest if index == last else earliest


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

    def process_element(self, trades, ctx):
        # trades: [(trade_id, symbol, price, size, side, event_time), ...] of this symbol, in arrival order
        if not trades:
            return  # a heartbeat: its event time has done its work upstream (ParseTrades)
        config = self.config
        slot = DetectorSlot.from_state(config.detector, self.detector_state.value())
        detector = slot.detector
        book = self._book(ctx)
        timer_service = ctx.timer_service()
        # One watermark for the whole batch: none can arrive between two elements of one input record.
        self.watermark = timer_service.current_watermark()
        watermark = book.effective_watermark(self.watermark)
        added = False
        for fields in trades:
            trade = Trade(*fields)
            found = detector.push(trade)
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
            if is_late(trade.event_time, watermark, config.grace_ms):
                self.late_trades.inc()
                yield LATE_TRADES, Row(*fields, watermark)
                continue
            for close_time in book.add(trade, config):
                timer_service.register_event_time_timer(close_time)
            added = True
        self.detector_state.update(slot)
        if added:
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
