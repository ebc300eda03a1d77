"""The DataStream job's batches (marketpulse/flink/functions.py): a batch of Kafka records as Java's
RecordBatcher writes it, read back record by record; ParseTrades' elements per symbol and their stamps."""

from __future__ import annotations

import struct

import pytest

pytest.importorskip("pyflink")

from marketpulse.flink.functions import DEAD_LETTERS, HEARTBEAT_SYMBOL, ParseTrades, unpack_records  # noqa: E402
from marketpulse.trade import Trade  # noqa: E402


def batch_values(values: list[bytes | None]) -> bytes:
    """What io.marketpulse.flink.RecordBatcher writes: a 4-byte big-endian signed length (-1: tombstone), the
    bytes."""
    return b"".join(struct.pack(">i", -1) if value is None else struct.pack(">i", len(value)) + value
                    for value in values)


class Counter:
    def __init__(self):
        self.count = 0

    def inc(self):
        self.count += 1


def parser() -> ParseTrades:
    parse = ParseTrades("trades")
    parse.bad_records, parse.heartbeats = Counter(), Counter()
    return parse


def run(parse: ParseTrades, values: list[bytes | None], first_offset: int = 100):
    offsets = list(range(first_offset, first_offset + len(values)))
    return list(parse.process_element((batch_values(values), 3, offsets), None))


def trade(trade_id: str, symbol: str, event_time: int, price: float = 10.0) -> Trade:
    return Trade(trade_id, symbol, price, 5, "BUY", event_time)


def test_records_come_back_in_order_with_their_offsets_empty_and_tombstones_included():
    values = [b'{"a":1}', None, b"", b"x" * 70_000, "é".encode()]
    assert list(unpack_records(batch_values(values), [7, 8, 10, 11, 12])) == [
        (7, b'{"a":1}'), (8, None), (10, b""), (11, b"x" * 70_000), (12, "é".encode())]


def test_trades_are_grouped_per_symbol_in_arrival_order_and_bad_records_become_dead_letters():
    parse = parser()
    a1, b1, a2, b2 = (trade("A-1", "AAA", 5_000), trade("B-1", "BBB", 4_000), trade("A-2", "AAA", 3_000),
                      trade("B-2", "BBB", 9_000))
    out = run(parse, [a1.to_json().encode(), b1.to_json().encode(), b"{not json", None,
                      a2.to_json().encode(), b'{"heartbeat":2000}', b2.to_json().encode()])
    dead = [row for tag, row in (item for item in out if item[0] is DEAD_LETTERS)]
    assert [(row[0], row[1], row[2]) for row in dead] == [("trades", 3, 102), ("trades", 3, 103)]
    assert parse.bad_records.count == 2 and parse.heartbeats.count == 1
    elements = [item for item in out if item[0] is not DEAD_LETTERS]
    fields = lambda t: (t.trade_id, t.symbol, t.price, t.size, t.side, t.event_time)  # noqa: E731
    # (Row(symbol, trades), event time): every element but the last at the batch's earliest time (the
    # heartbeat's 2000), the last at its latest (9000), so no watermark falls between them.
    assert [(tuple(row), stamp) for row, stamp in elements] == [
        (("AAA", [fields(a1), fields(a2)]), 2_000),
        (("BBB", [fields(b1), fields(b2)]), 9_000),
    ]


def test_a_batch_of_heartbeats_only_moves_event_time_and_one_of_bad_records_only_emits_nothing_else():
    parse = parser()
    out = run(parse, [b'{"heartbeat":7000}', b'{"heartbeat":6000}'])
    assert [(tuple(row), stamp) for row, stamp in out] == [((HEARTBEAT_SYMBOL, []), 7_000)]
    out = run(parse, [b"[]", b"null"])
    assert [item[0] for item in out] == [DEAD_LETTERS, DEAD_LETTERS]
