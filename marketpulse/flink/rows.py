"""The typed rows on the edges of the DataStream job. The hot edges carry batches: Kafka records batched in
Java (KAFKA_RECORD_BATCH), then per symbol a pickled list of trade tuples between the two Python operators
(KEYED_TRADES). The outputs are ROWs of primitive fields that Java reads. Times are epoch-ms BIGINTs; the
sink SQL (jobs/market_metrics_sinks.sql) turns them into timestamps for Postgres. State stays in the Python
worker's cache within a bundle, so it is pickled too."""

from __future__ import annotations

from dataclasses import fields
from typing import get_type_hints

from pyflink.common import Types

from marketpulse.analytics import WINDOW_METRICS_COLUMNS
from marketpulse.trade import Trade

# A valid trade: the fields of marketpulse.trade.Trade, in that order.
TRADE_FIELDS = tuple(field.name for field in fields(Trade))
_FLINK_TYPES = {str: Types.STRING(), float: Types.DOUBLE(), int: Types.LONG()}
TRADE = Types.ROW_NAMED(list(TRADE_FIELDS),
                        [_FLINK_TYPES[get_type_hints(Trade)[name]] for name in TRADE_FIELDS])
# Row(symbol, trades): one symbol's valid trades of one batch of Kafka records, in arrival order, each a
# tuple of TRADE_FIELDS. Field 0 is the key the keyed operator is partitioned on (marketpulse/flink/compat.py,
# key_by_first_field). The list is pickled: it goes from one of our Python operators to the other, Java only
# routes it by its key, and one pickle of a list costs a fraction of a Row per trade (PyFlink builds Rows in
# Python).
KEYED_TRADES = Types.ROW([Types.STRING(), Types.PICKLED_BYTE_ARRAY()])
# Tuple2(Row(symbol, trades), event_time): what the Java timestamp assigner reads its timestamp from.
TIMESTAMPED_TRADES = Types.TUPLE([KEYED_TRADES, Types.LONG()])

_WINDOW_TYPES = {
    "symbol": Types.STRING(),
    "window_seconds": Types.INT(),
    "window_start": Types.LONG(),
    "window_end": Types.LONG(),
    "volume": Types.LONG(),
    "trade_count": Types.LONG(),
    "buy_count": Types.LONG(),
    "sell_count": Types.LONG(),
}
# One row of window_metrics (without engine), in WindowMetrics field order; other fields are DOUBLE.
WINDOW_METRICS = Types.ROW_NAMED(
    list(WINDOW_METRICS_COLUMNS),
    [_WINDOW_TYPES.get(name, Types.DOUBLE()) for name in WINDOW_METRICS_COLUMNS],
)

ANOMALY_FIELDS = ("trade_id", "rule", "symbol", "event_time", "price", "size", "z_score", "mean", "stddev",
                  "detected_at")
ANOMALY = Types.ROW_NAMED(
    list(ANOMALY_FIELDS),
    [Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG(), Types.DOUBLE(), Types.LONG(),
     Types.DOUBLE(), Types.DOUBLE(), Types.DOUBLE(), Types.LONG()],
)

# A window scored by the multivariate detector (marketpulse.analytics.multivariate.WindowScore, top features
# as text).
WINDOW_ANOMALY_FIELDS = ("symbol", "window_seconds", "window_start", "window_end", "score", "threshold",
                         "anomalous", "top_features")
WINDOW_ANOMALY = Types.ROW_NAMED(
    list(WINDOW_ANOMALY_FIELDS),
    [Types.STRING(), Types.INT(), Types.LONG(), Types.LONG(), Types.DOUBLE(), Types.DOUBLE(), Types.BOOLEAN(),
     Types.STRING()],
)

# A trade behind the watermark, with the watermark it was measured against.
LATE_TRADE_FIELDS = ("trade_id", "symbol", "price", "size", "side", "event_time", "watermark")
LATE_TRADE = Types.ROW_NAMED(
    list(LATE_TRADE_FIELDS),
    [Types.STRING(), Types.STRING(), Types.DOUBLE(), Types.LONG(), Types.STRING(), Types.LONG(),
     Types.LONG()],
)

# One Kafka record of the trades topic as the source reads it: the raw value (None for a tombstone) and its
# coordinates, which make each record's dead letter its own row (and a replay rewrite the same row).
KAFKA_RECORD_FIELDS = ("value", "partition", "offset")
KAFKA_RECORD = Types.ROW_NAMED(
    list(KAFKA_RECORD_FIELDS), [Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.INT(), Types.LONG()])
# A batch of Kafka records of one partition, in arrival order (flink-ext: io.marketpulse.flink.RecordBatcher):
# Row(values, partition, offsets), values = for each record a 4-byte big-endian signed length (-1: tombstone)
# and its bytes; offsets[i] is the offset of the i-th value.
KAFKA_RECORD_BATCH = Types.ROW(
    [Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.INT(), Types.PRIMITIVE_ARRAY(Types.LONG())])

# A record that is not a valid trade: the full raw value (the database keeps the first 64 KiB, its length
# and this hash; db/schema/005_dead_letters_raw.sql), why it was rejected, and where it came from.
DEAD_LETTER_FIELDS = ("topic", "partition", "offset", "payload", "payload_sha1", "reason", "received_at")
DEAD_LETTER = Types.ROW_NAMED(
    list(DEAD_LETTER_FIELDS),
    [Types.STRING(), Types.INT(), Types.LONG(), Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.STRING(),
     Types.STRING(), Types.LONG()],
)
