"""Malformed trade messages, each one failing marketpulse.trade.parse_trade.

Every bad payload contains the trade id of the slot it replaces (symbol, run token and sequence number), so
no two are byte-identical: the dead-letter table is keyed by a hash of the payload.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

KINDS = ("malformed_json", "missing_field", "negative_price", "invalid_symbol", "bad_side")
_DROPPABLE = ("symbol", "price", "size", "side", "event_time")


@dataclass(frozen=True)
class BadOptions:
    fraction: float = 0.0
    kinds: tuple[str, ...] = KINDS

    @property
    def enabled(self) -> bool:
        return self.fraction > 0 and bool(self.kinds)


def _dumps(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"))


def make_bad(kind: str, trade: dict, rng: random.Random) -> bytes:
    """A bad payload built from a good trade dict (trade_id first, so every variant keeps it)."""
    if kind == "malformed_json":
        text = _dumps(trade)
        # Cut somewhere after the trade id, so the id (and uniqueness) survives the truncation.
        start = text.index(",", text.index("trade_id")) + 1
        return text[: rng.randint(start, len(text) - 1)].encode()
    record = dict(trade)
    if kind == "missing_field":
        del record[_DROPPABLE[rng.randrange(len(_DROPPABLE))]]
    elif kind == "negative_price":
        record["price"] = -record["price"]
    elif kind == "invalid_symbol":
        record["symbol"] = record["symbol"].lower() + "$"
    elif kind == "bad_side":
        record["side"] = "HOLD"
    else:
        raise ValueError(f"unknown bad-record kind {kind!r}")
    return _dumps(record).encode()
