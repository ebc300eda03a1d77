"""The trade record: the one contract between the generator, the Flink jobs and the tests.

The JSON schema in marketpulse/schemas/trade.schema.json documents it; `parse_trade` enforces the same
rules without a schema library, fast enough for the hot path of a Flink job, and says why a record is bad.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

SCHEMA_PATH = Path(__file__).parent / "schemas" / "trade.schema.json"
SYMBOL_PATTERN = re.compile(r"^[A-Z][A-Z0-9.\-]{0,11}$")
SIDES = ("BUY", "SELL")
FIELDS = ("trade_id", "symbol", "price", "size", "side", "event_time")


@dataclass(frozen=True, slots=True)
class Trade:
    trade_id: str
    symbol: str
    price: float
    size: int
    side: str
    event_time: int  # epoch millis

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def to_dict(self) -> dict:
        return asdict(self)


class InvalidTrade(ValueError):
    """A record that is not a valid trade; str(err) is the reason stored in the dead-letter table."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_trade_dict(record: object) -> Trade:
    if not isinstance(record, dict):
        raise InvalidTrade(f"not a JSON object: {type(record).__name__}")
    missing = [name for name in FIELDS if name not in record]
    if missing:
        raise InvalidTrade(f"missing field(s): {', '.join(missing)}")
    extra = sorted(set(record) - set(FIELDS))
    if extra:
        raise InvalidTrade(f"unknown field(s): {', '.join(extra)}")

    trade_id, symbol, price = record["trade_id"], record["symbol"], record["price"]
    size, side, event_time = record["size"], record["side"], record["event_time"]
    if not isinstance(trade_id, str) or not 1 <= len(trade_id) <= 64:
        raise InvalidTrade(f"bad trade_id: {trade_id!r}")
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.match(symbol):
        raise InvalidTrade(f"bad symbol: {symbol!r}")
    if not isinstance(price, int | float) or isinstance(price, bool) or not math.isfinite(price):
        raise InvalidTrade(f"bad price: {price!r}")
    if price <= 0:
        raise InvalidTrade(f"non-positive price: {price!r}")
    if not _is_int(size) or size < 1:
        raise InvalidTrade(f"bad size: {size!r}")
    if side not in SIDES:
        raise InvalidTrade(f"bad side: {side!r}")
    if not _is_int(event_time) or event_time < 0:
        raise InvalidTrade(f"bad event_time: {event_time!r}")
    return Trade(trade_id, symbol, float(price), size, side, event_time)


def parse_trade(payload: bytes | str) -> Trade:
    """Parses one Kafka message value; raises InvalidTrade with the reason."""
    try:
        record = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidTrade(f"malformed JSON: {err.msg if hasattr(err, 'msg') else err}") from None
    return validate_trade_dict(record)
