"""marketpulse.trade.parse_trade on hostile input: every class of bad value is rejected with a storable
reason, and a seeded mutation fuzzer finds nothing that escapes as another exception or as an unstorable
Trade. "Storable" is checked here independently of the module's own bounds: PostgreSQL text (UTF-8, no NUL),
BIGINT, finite DOUBLE, Flink TIMESTAMP(3) up to 9999-12-31."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest

from generator import hostile
from marketpulse.trade import SCHEMA_PATH, InvalidTrade, Trade, parse_trade

VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
BIGINT_MAX = 2**63 - 1
YEAR_10000_MS = 253_402_300_800_000
GOOD = {"trade_id": "AAPL-r1-1", "symbol": "AAPL", "price": 187.25, "size": 100, "side": "BUY",
        "event_time": 1_735_828_200_000}


def storable_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def assert_storable(trade: Trade) -> None:
    for text in (trade.trade_id, trade.symbol, trade.side):
        assert isinstance(text, str) and storable_text(text) and text.isascii() and text.isprintable()
    assert isinstance(trade.price, float) and 0 < trade.price < float("inf")
    # a window of a million such trades still fits BIGINT and a finite double
    assert isinstance(trade.size, int) and 1 <= trade.size and trade.size * 1_000_000 <= BIGINT_MAX
    assert trade.price * trade.size * 1_000_000 < float("inf")
    # the window that holds it (60 s) ends before year 10000
    assert isinstance(trade.event_time, int) and 0 <= trade.event_time < YEAR_10000_MS - 60_000


def assert_rejected(value, reason_part: str | None = None) -> str:
    with pytest.raises(InvalidTrade) as info:
        parse_trade(value)
    reason = str(info.value)
    assert storable_text(reason) and reason.isprintable() and len(reason) <= 200, reason
    if reason_part:
        assert reason_part in reason, reason
    return reason


def test_valid_trade_parses_from_bytes_and_str():
    value = json.dumps(GOOD)
    assert parse_trade(value.encode()) == parse_trade(value) == Trade(**{**GOOD, "price": 187.25})
    assert parse_trade(value.encode()).to_dict() == GOOD


@pytest.mark.parametrize("value, reason", [
    (None, "null value (tombstone)"),
    (b"", "empty value"),
    (b"\xff{}", "not UTF-8"),
    (json.dumps(GOOD).encode("utf-16"), "not UTF-8"),
    (b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), "malformed JSON"),
    (b"[" * 100_000, "value too large"),
    (b"[" * 4000, "nested too deeply"),
    (b'{"a":1,"a":2}', "duplicate key: 'a'"),
    (b"NaN", "NaN is not JSON"),
    (json.dumps(GOOD)[:-1] + ',"size":5}', "duplicate key: 'size'"),
    (json.dumps({**GOOD, "trade_id": "A\x00"}), "bad trade_id: 'A\\x00'"),
    (json.dumps({**GOOD, "trade_id": "A\ud800"}), "bad trade_id: 'A\\ud800'"),
    (json.dumps({**GOOD, "trade_id": "A B"}), "bad trade_id"),
    (json.dumps({**GOOD, "trade_id": "x" * 65}), "bad trade_id"),
    (json.dumps({**GOOD, "symbol": "AAPL\n"}), "bad symbol: 'AAPL\\n'"),
    (json.dumps({**GOOD, "price": 1e300}), "price above"),
    (json.dumps(GOOD).replace("187.25", "1e400"), "bad price: inf"),
    (json.dumps(GOOD).replace("187.25", "-Infinity"), "Infinity is not JSON"),
    (json.dumps({**GOOD, "size": 10**20}), "bad size"),
    (json.dumps(GOOD).replace("100", "9" * 3900), "bad size: 9999"),
    (json.dumps({**GOOD, "size": 5.0}), "bad size: 5.0"),
    (json.dumps({**GOOD, "size": "5"}), "bad size: '5'"),
    (json.dumps({**GOOD, "size": True}), "bad size: True"),
    (json.dumps({**GOOD, "side": ["BUY"]}), "bad side"),
    (json.dumps({**GOOD, "event_time": YEAR_10000_MS}), "bad event_time"),
    (json.dumps({**GOOD, "event_time": -1}), "bad event_time"),
    (json.dumps({**GOOD, "venue": "X\x00" * 500}), "unknown field(s): 'venue'"),
    (json.dumps({("k" * 300): 1, **GOOD}), "unknown field(s): 'kkkk"),
    (b"42", "not a JSON object: int"),
    # One per rule of validate_trade_dict, with the exact reason.
    (b"[1]", "not a JSON object: list"),
    (json.dumps({key: value for key, value in GOOD.items() if key not in ("side", "size")}),
     "missing field(s): size, side"),
    (json.dumps({**GOOD, "trade_id": 7}), "bad trade_id: 7"),
    (json.dumps({**GOOD, "symbol": "aapl"}), "bad symbol: 'aapl'"),
    (json.dumps({**GOOD, "symbol": ""}), "bad symbol: ''"),
    (json.dumps({**GOOD, "price": "187.25"}), "bad price: '187.25'"),
    (json.dumps({**GOOD, "price": True}), "bad price: True"),
    (json.dumps({**GOOD, "price": 0}), "non-positive price: 0"),
    (json.dumps({**GOOD, "price": -0.01}), "non-positive price: -0.01"),
    (json.dumps({**GOOD, "size": 0}), "bad size: 0"),
    (json.dumps({**GOOD, "side": "buy"}), "bad side: 'buy'"),
    (json.dumps({**GOOD, "event_time": 1.5}), "bad event_time: 1.5"),
    (json.dumps({**GOOD, "event_time": "1700000000000"}), "bad event_time: '1700000000000'"),
])
def test_hostile_values_are_rejected_with_a_storable_reason(value, reason):
    assert_rejected(value, reason)


def test_upper_bounds_are_inclusive_and_storable():
    trade = parse_trade(json.dumps({**GOOD, "price": 1e9, "size": 10**9, "event_time": 253_402_214_399_999}))
    assert_storable(trade)
    assert VALIDATOR.is_valid(trade.to_dict())


def test_every_hostile_class_is_rejected():
    rng = random.Random(3)
    for make in hostile.CLASSES.values():
        assert_rejected(make(hostile.valid_trade(rng, 0), rng))


def test_mutation_fuzzer_finds_no_escape():
    """5,000 seeded mutations of valid trades: parse_trade returns a storable Trade that the JSON schema
    accepts, or raises InvalidTrade with a storable reason; never another exception."""
    rng = random.Random(20261122)
    outcomes = {"trade": 0, "invalid": 0}
    for index in range(5000):
        value = hostile.mutate(hostile.dumps(hostile.valid_trade(rng, index)), rng)
        try:
            trade = parse_trade(value)
        except InvalidTrade as err:
            assert storable_text(str(err)) and str(err).isprintable() and len(str(err)) <= 200, (value, err)
            outcomes["invalid"] += 1
        else:
            assert_storable(trade)
            assert VALIDATOR.is_valid(trade.to_dict()), value
            outcomes["trade"] += 1
    # the fuzzer really mutates: most records break, a few stay (differently) valid
    assert outcomes["invalid"] > 4000 and outcomes["trade"] > 0, outcomes


def test_corpus_is_seeded_labelled_and_all_bad():
    records = hostile.corpus(400, seed=5)
    assert [r.value for r in records] == [r.value for r in hostile.corpus(400, seed=5)]
    classes = hostile.summary(records)
    assert set(classes) == set(hostile.CLASSES) | {"fuzz"} and classes["fuzz"] == 200
    for record in records:
        assert record.reason == assert_rejected(record.value)
        label = record.label()
        assert label["expect"] == "dead" and label["class"] == record.klass
    assert sum(r.value is None for r in records) == classes["tombstone"]
