"""The trade record: the one contract between the generator, the Flink jobs and the tests.

The JSON schema in marketpulse/schemas/trade.schema.json documents it; `parse_trade` enforces the same
rules without a schema library, fast enough for the hot path of a Flink job, and says why a record is bad.

`parse_trade` takes any Kafka message value (None for a tombstone, any bytes) and either returns a Trade
that every sink can store (printable ASCII ids, finite numbers inside BIGINT/DOUBLE/TIMESTAMP range, sums
over a window that cannot overflow) or raises InvalidTrade; never anything else. Its reason is short,
printable, NUL-free UTF-8 (see `describe`), so a dead-letter row can always be written.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

SCHEMA_PATH = Path(__file__).parent / "schemas" / "trade.schema.json"
# fullmatch semantics: `$` alone would also accept a trailing newline ("AAPL\n").
SYMBOL_PATTERN = re.compile(r"[A-Z][A-Z0-9.\-]{0,11}")
# Letters, digits and . _ : - only: an id is a key in Postgres, Kafka and the dashboard, survives every
# encoding, and reads the same in JSON text (the SQL scripts check the field's JSON text, sql/*.sql).
TRADE_ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
SIDES = ("BUY", "SELL")
FIELDS = ("trade_id", "symbol", "price", "size", "side", "event_time")
# Upper bounds that keep every derived value storable: SUM(size) of a window stays far inside BIGINT and
# price * size inside DOUBLE; windows of the last valid event time end before 10000-01-01 (TIMESTAMP(3)).
MAX_PRICE = 1_000_000_000.0
MAX_SIZE = 1_000_000_000
MAX_EVENT_TIME_MS = 253_402_214_399_999  # 9999-12-30T23:59:59.999Z
# A valid trade is < 300 bytes; anything far larger is rejected before it is parsed at all.
MAX_PAYLOAD_BYTES = 4096
REASON_MAX_CHARS = 200

# A watermark heartbeat: not a trade, a producer's promise that it has sent every trade of this partition
# up to this event time (epoch ms). The generator sends one to every partition each second on the wall
# clock, so that a partition whose symbols are silent still moves event time and every window closes
# (README "Idle partitions"). Exactly this text, nothing else: both engines recognise it by this pattern
# (the SQL source through ${record_is_heartbeat}), take its time as event time, and neither counts it as
# a trade or a dead letter.
HEARTBEAT_PATTERN = re.compile(rb'\{"heartbeat":(0|[1-9][0-9]{0,14})\}')


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


def describe(value: object, limit: int = 40) -> str:
    """A short printable form of a bad value for a reason: repr() escapes NUL, control characters and lone
    surrogates; the result is cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_trade_dict(record: object) -> Trade:
    if not isinstance(record, dict):
        raise InvalidTrade(f"not a JSON object: {type(record).__name__}")
    missing = [name for name in FIELDS if name not in record]
    if missing:
        raise InvalidTrade(f"missing field(s): {', '.join(missing)}")
    if len(record) != len(FIELDS):
        extra = sorted(describe(name) for name in set(record) - set(FIELDS))
        raise InvalidTrade(describe_list("unknown field(s): ", extra))

    trade_id, symbol, price = record["trade_id"], record["symbol"], record["price"]
    size, side, event_time = record["size"], record["side"], record["event_time"]
    if not isinstance(trade_id, str) or not TRADE_ID_PATTERN.fullmatch(trade_id):
        raise InvalidTrade(f"bad trade_id: {describe(trade_id)}")
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.fullmatch(symbol):
        raise InvalidTrade(f"bad symbol: {describe(symbol)}")
    if not isinstance(price, int | float) or isinstance(price, bool) or not math.isfinite(price):
        raise InvalidTrade(f"bad price: {describe(price)}")
    if price <= 0:
        raise InvalidTrade(f"non-positive price: {describe(price)}")
    if price > MAX_PRICE:
        raise InvalidTrade(f"price above {MAX_PRICE:.0f}: {describe(price)}")
    if not _is_int(size) or not 1 <= size <= MAX_SIZE:
        raise InvalidTrade(f"bad size: {describe(size)}")
    if not isinstance(side, str) or side not in SIDES:
        raise InvalidTrade(f"bad side: {describe(side)}")
    if not _is_int(event_time) or not 0 <= event_time <= MAX_EVENT_TIME_MS:
        raise InvalidTrade(f"bad event_time: {describe(event_time)}")
    return Trade(trade_id, symbol, float(price), size, side, event_time)


def describe_list(prefix: str, items: list[str]) -> str:
    text = prefix + ", ".join(items)
    return text if len(text) <= REASON_MAX_CHARS else text[: REASON_MAX_CHARS - 3] + "..."


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise InvalidTrade(f"duplicate key: {describe(duplicate)}")
    return record


def _no_constant(name: str):
    raise InvalidTrade(f"malformed JSON: {name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def parse_trade(payload: bytes | str | None) -> Trade:
    """Parses one Kafka message value (None = a tombstone); raises InvalidTrade with the reason."""
    if payload is None:
        raise InvalidTrade("null value (tombstone)")
    if len(payload) == 0:
        raise InvalidTrade("empty value")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidTrade(f"value too large: {len(payload)} bytes (limit {MAX_PAYLOAD_BYTES})")
    if isinstance(payload, bytes | bytearray | memoryview):
        try:
            # Explicitly UTF-8: json.loads(bytes) would also guess UTF-16 and UTF-32.
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidTrade(f"not UTF-8: {err.reason} at byte {err.start}") from None
    elif isinstance(payload, str):
        text = payload
    else:
        raise InvalidTrade(f"not a message value: {type(payload).__name__}")
    try:
        record = _DECODER.decode(text)
    except InvalidTrade:  # from the hooks: duplicate key, NaN/Infinity
        raise
    except json.JSONDecodeError as err:
        raise InvalidTrade(f"malformed JSON: {err.msg}") from None
    except RecursionError:
        raise InvalidTrade("malformed JSON: nested too deeply") from None
    except ValueError as err:  # e.g. an integer literal beyond Python's digit limit
        raise InvalidTrade(f"malformed JSON: {describe(str(err), REASON_MAX_CHARS)}") from None
    return validate_trade_dict(record)


def heartbeat_value(event_time_ms: int) -> bytes:
    """The Kafka value of a heartbeat at this event time."""
    if not 0 <= event_time_ms <= MAX_EVENT_TIME_MS:
        raise ValueError(f"heartbeat event time out of range: {event_time_ms}")
    return b'{"heartbeat":%d}' % event_time_ms


def heartbeat_time(payload: bytes | None) -> int | None:
    """The event time of a heartbeat record, or None when the value is anything else."""
    if payload is None or len(payload) > 32:
        return None
    found = HEARTBEAT_PATTERN.fullmatch(payload)
    if found is None:
        return None
    event_time = int(found.group(1))
    return event_time if event_time <= MAX_EVENT_TIME_MS else None
