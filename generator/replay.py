"""Replay of historical trades from a CSV file, preserving their order and event times.

Columns (a header row is required, any order, extra columns ignored):
    timestamp  epoch milliseconds, or ISO 8601 (e.g. 2025-01-02T14:30:00.125Z; no zone = UTC)
    symbol     ticker (upper-case letter, then up to 11 of A-Z 0-9 . -)
    price      positive number, USD
    size       positive integer, shares
    side       optional: BUY or SELL; when missing or empty it is inferred with the tick rule (up-tick =
               BUY, down-tick = SELL, unchanged = previous side of that symbol)
Trade ids are "<symbol>-r<row>", row = 1-based data row number, so replaying a file twice gives the same ids.
The event offsets of the rows (ms since the first row) drive pacing at --speed x real time.
"""

from __future__ import annotations

import csv
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

from marketpulse.times import parse_timestamp
from marketpulse.trade import InvalidTrade, validate_trade_dict

from .model import build_universe
from .reference import reference_message
from .stream import Event, Topics

REQUIRED_COLUMNS = ("timestamp", "symbol", "price", "size")


class ReplayError(ValueError):
    """A replay file that cannot be read; the message names the file and line."""


def owns_symbol(symbol: str, shard: tuple[int, int]) -> bool:
    """Replay sharding: the symbols of a file are not known up front, so a stable hash decides."""
    index, count = shard
    return zlib.crc32(symbol.encode()) % count == index


def read_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, trade dict) per data row; raises ReplayError with file:line on a bad row."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as err:
        raise ReplayError(f"cannot open replay file {path}: {err.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or ()]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ReplayError(f"{path}: missing column(s) {', '.join(missing)} in the header "
                              f"(need {', '.join(REQUIRED_COLUMNS)}[, side])")
        reader.fieldnames = columns
        last_price: dict[str, float] = {}
        last_side: dict[str, str] = {}
        for row_number, row in enumerate(reader, start=1):
            line = reader.line_num
            try:
                symbol = (row["symbol"] or "").strip()
                price = float(row["price"])
                size_text = (row["size"] or "").strip()
                size = int(size_text) if size_text.isdigit() else int(float(size_text))
                side = (row.get("side") or "").strip().upper()
                if not side:
                    previous = last_price.get(symbol)
                    if previous is None or price == previous:
                        side = last_side.get(symbol, "BUY")
                    else:
                        side = "BUY" if price > previous else "SELL"
                trade = validate_trade_dict({
                    "trade_id": f"{symbol}-r{row_number}", "symbol": symbol, "price": round(price, 2),
                    "size": size, "side": side, "event_time": parse_timestamp(row["timestamp"] or ""),
                }).to_dict()
            except (ValueError, TypeError, InvalidTrade) as err:
                raise ReplayError(f"{path}:{line}: {err}") from None
            last_price[symbol], last_side[symbol] = price, side
            yield line, trade


def replay_events(path: str | Path, seed: int, topics: Topics | None = None,
                  shard: tuple[int, int] = (0, 1)) -> Iterator[Event]:
    """The file as events, in file order; the reference record of a symbol precedes its first trade."""
    topics = topics or Topics()
    first_ms = None
    seen: set[str] = set()
    n = 0
    for _, trade in read_rows(path):
        symbol = trade["symbol"]
        if not owns_symbol(symbol, shard):
            continue
        if first_ms is None:
            first_ms = trade["event_time"]
        key = symbol.encode()
        messages = ((topics.trades, key, json.dumps(trade, separators=(",", ":")).encode()),)
        if symbol not in seen:
            seen.add(symbol)
            spec = build_universe([symbol], seed)[0]
            spec = type(spec)(**{**spec.as_dict(), "start_price": trade["price"]})
            messages = ((topics.reference, *reference_message(spec)), *messages)
        n += 1
        # Offsets may go backwards (an out-of-order file): pacing then simply does not wait.
        yield ((trade["event_time"] - first_ms) / 1000.0, 0, n, messages)
