"""Ground truth records for the `trades.injected` topic (key = symbol, value = one JSON object).

Every label has the same leading fields:
    {"kind": ..., "trade_id": ..., "symbol": ..., "event_time": <epoch ms of the trade>, "magnitude": ...}
followed by kind-specific fields:
    price_spike / price_crash  magnitude = relative move (0.12 = +12 %), model_price, price
    volume_spike               magnitude = size / model size, model_size, size
    late                       magnitude = delay_ms, delay_ms (how long the trade was held back, event time)
    bad                        magnitude = null, bad_kind, reason (parse_trade's message), payload_sha1
                               (hex SHA-1 of the exact message value: the dead-letter table's key)
"""

from __future__ import annotations

import json


def label(kind: str, trade_id: str, symbol: str, event_time: int, magnitude, **details) -> bytes:
    record = {"kind": kind, "trade_id": trade_id, "symbol": symbol, "event_time": event_time,
              "magnitude": magnitude, **details}
    return json.dumps(record, separators=(",", ":")).encode()
