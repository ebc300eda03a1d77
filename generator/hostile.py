"""A seeded corpus of hostile `trades` messages: every class of value a foreign producer can put on the
topic, plus mutation-fuzzed copies of valid trades, each with a label of what it is and what must happen.

    python -m generator.hostile --count 3000 [--seed 7] [--topic trades] [--output corpus.jsonl]

With --topic the values go to Kafka (key = symbol, spread over the partitions); with --output each record is
one JSON line {"class", "expect", "reason", "payload_sha1", "length", "value_b64"} (value_b64 null for a
tombstone). Without either, a per-class summary is printed. Exit 0 done, 1 Kafka failure, 2 bad usage;
errors are one line.

Every record is bad (expect = "dead": each engine must dead-letter it with its reason, never stop): the
fuzzer keeps only mutations that marketpulse.trade.parse_trade rejects, so the corpus never moves event
time. Valid fields use event times in the hour before `base_ms`, for tests that send good trades after.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

from marketpulse.trade import InvalidTrade, parse_trade

from .injections import BAD_KINDS, make_bad

DEFAULT_BASE_MS = 1_735_828_200_000  # 2025-01-02T14:30:00Z, the generator's default start
SYMBOLS = ("AAPL", "MSFT", "NVDA", "JPM")


@dataclass(frozen=True)
class HostileRecord:
    klass: str
    key: bytes | None
    value: bytes | None
    reason: str  # parse_trade's reason: what the DataStream job stores

    @property
    def payload_sha1(self) -> str | None:
        return None if self.value is None else hashlib.sha1(self.value).hexdigest()

    def label(self) -> dict:
        return {"class": self.klass, "expect": "dead", "reason": self.reason,
                "payload_sha1": self.payload_sha1,
                "length": None if self.value is None else len(self.value),
                "value_b64": None if self.value is None else base64.b64encode(self.value).decode()}


def valid_trade(rng: random.Random, index: int, base_ms: int = DEFAULT_BASE_MS) -> dict:
    symbol = SYMBOLS[index % len(SYMBOLS)]
    return {"trade_id": f"{symbol}-hostile-{index}", "symbol": symbol,
            "price": round(rng.uniform(10, 500), 2), "size": rng.randint(1, 1000),
            "side": rng.choice(("BUY", "SELL")), "event_time": base_ms - 3_600_000 + rng.randrange(3_000_000)}


def dumps(record: dict) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def _with_field(trade: dict, name: str, raw_json: str) -> bytes:
    """The trade's JSON with one field's value replaced by raw JSON text (which may be invalid JSON)."""
    parts = [f'"{key}":{raw_json if key == name else json.dumps(value)}' for key, value in trade.items()]
    return ("{" + ",".join(parts) + "}").encode()


# class -> payload from a valid trade; each one must fail parse_trade.
CLASSES: dict[str, Callable[[dict, random.Random], bytes | None]] = {
    "tombstone": lambda t, r: None,
    "empty": lambda t, r: b"",
    "whitespace": lambda t, r: b" \n\t ",
    "non_utf8": lambda t, r: _with_field(t, "trade_id", '"' + t["trade_id"] + '"').replace(
        b"hostile", b"host\xffile\xc3"),
    "latin1": lambda t, r: _with_field(t, "symbol", '"' + t["symbol"] + '\u00e9"').decode().encode("latin-1"),
    "utf16": lambda t, r: dumps(t).decode().encode("utf-16"),
    "utf8_bom": lambda t, r: b"\xef\xbb\xbf" + dumps(t),
    "nul_raw": lambda t, r: _with_field(t, "trade_id", '"' + t["trade_id"] + '\x00"'),
    "nul_outside": lambda t, r: dumps(t) + b"\x00",
    "nul_escaped": lambda t, r: _with_field(t, "trade_id", '"' + t["trade_id"] + '\\u0000"'),
    "nul_escaped_side": lambda t, r: _with_field(t, "side", '"BUY\\u0000"'),
    "lone_surrogate": lambda t, r: _with_field(t, "trade_id", '"' + t["trade_id"] + '\\ud800"'),
    "control_chars": lambda t, r: _with_field(t, "trade_id", '"' + t["trade_id"] + '\\u001b[2J"'),
    "trailing_newline_symbol": lambda t, r: _with_field(t, "symbol", '"' + t["symbol"] + '\\n"'),
    "non_ascii_id": lambda t, r: _with_field(t, "trade_id", '"' + t["trade_id"] + '\\u00e9"'),
    "long_id": lambda t, r: _with_field(t, "trade_id", '"' + "X" * 65 + str(r.random()) + '"'),
    "huge_value": lambda t, r: _with_field(t, "trade_id", '"' + "A" * 1_000_000 + '"'),
    "huge_whitespace": lambda t, r: dumps(t) + b" " * 200_000,
    "deep_nesting": lambda t, r: _with_field(t, "trade_id", "[" * 50_000 + "]" * 50_000),
    "deep_nesting_small": lambda t, r: _with_field(t, "trade_id", "[" * 1500 + "]" * 1500),
    "float_overflow": lambda t, r: _with_field(t, "price", "1e400"),
    "price_too_high": lambda t, r: _with_field(t, "price", "1e300"),
    "nan_price": lambda t, r: _with_field(t, "price", "NaN"),
    "infinity_price": lambda t, r: _with_field(t, "price", "-Infinity"),
    "int_beyond_bigint": lambda t, r: _with_field(t, "size", "99999999999999999999999"),
    "int_5000_digits": lambda t, r: _with_field(t, "size", "9" * 5000),
    "size_too_large": lambda t, r: _with_field(t, "size", "9000000000000000000"),
    "size_float": lambda t, r: _with_field(t, "size", "5.0"),
    "size_string": lambda t, r: _with_field(t, "size", '"5"'),
    "price_string": lambda t, r: _with_field(t, "price", '"12.5"'),
    "bool_size": lambda t, r: _with_field(t, "size", "true"),
    "null_field": lambda t, r: _with_field(t, "event_time", "null"),
    "event_time_far": lambda t, r: _with_field(t, "event_time", "999999999999999999"),
    "event_time_year_10000": lambda t, r: _with_field(t, "event_time", "253402300800000"),
    "event_time_negative": lambda t, r: _with_field(t, "event_time", "-1"),
    "event_time_float": lambda t, r: _with_field(t, "event_time", str(t["event_time"]) + ".5"),
    "duplicate_key": lambda t, r: dumps(t)[:-1] + b',"price":' + str(t["price"] + 1).encode() + b"}",
    "duplicate_key_same": lambda t, r: dumps(t)[:-1] + b',"side":"' + t["side"].encode() + b'"}',
    "unknown_field": lambda t, r: dumps({**t, "venue": "XNAS"}),
    "not_object": lambda t, r: json.dumps(list(t.values())).encode(),
    "scalar": lambda t, r: b"42",
    "trailing_garbage": lambda t, r: dumps(t) + b"}",
    "two_objects": lambda t, r: dumps(t) + b"\n" + dumps(t),
    **{f"bad_{kind}": partial(make_bad, kind) for kind in BAD_KINDS},
}

# Classes that are costly to send and store (megabytes, deep recursion): at most this many per corpus.
RARE = {"huge_value": 3, "huge_whitespace": 3, "deep_nesting": 5, "int_5000_digits": 5}

# Byte strings the fuzzer splices in: structure, escapes, encodings, numbers at the edges.
_TOKENS = (b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\u0000", b"\\ud800", b"\\", b'"', b"{", b"}", b"[",
           b"]", b",", b":", b"-", b"e999", b"1e400", b"99999999999999999999", b"NaN", b"null", b"true",
           b" ", b"\n", b"0", b"9", b".", b"\\n", b'"x":1,', b"\xef\xbb\xbf")


def mutate(value: bytes, rng: random.Random) -> bytes:
    """One to three random edits of value: flip, insert a token, delete or duplicate a span, truncate."""
    data = bytearray(value)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        at = rng.randrange(len(data) + 1) if data else 0
        if op == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[at:at] = rng.choice(_TOKENS)
        elif op == 2 and data:
            del data[at:at + rng.randint(1, 8)]
        elif op == 3 and data:
            data[at:at] = data[at:at + rng.randint(1, 16)]
        elif op == 4 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif op == 5 and data:
            del data[at:]
    return bytes(data)


def fuzzed(rng: random.Random, index: int, base_ms: int = DEFAULT_BASE_MS) -> Iterator[tuple[bytes, str]]:
    """Mutations of valid trades, with parse_trade's reason; the (rare) mutations that stay valid trades
    are skipped, so a fuzz record is always bad."""
    while True:
        value = mutate(dumps(valid_trade(rng, index, base_ms)), rng)
        try:
            parse_trade(value)
        except InvalidTrade as err:
            yield value, str(err)


def corpus(count: int, seed: int = 7, base_ms: int = DEFAULT_BASE_MS,
           fuzz_fraction: float = 0.5) -> list[HostileRecord]:
    """`count` bad records: every class at least once (classes first), the rest split between the classes
    (round-robin; RARE ones capped, their turns go to malformed JSON) and the mutation fuzzer
    (fuzz_fraction of the total)."""
    rng = random.Random(seed)
    names = list(CLASSES)
    used: Counter = Counter()
    records: list[HostileRecord] = []
    n_fuzz = max(0, int(count * fuzz_fraction))
    for index in range(count):
        trade = valid_trade(rng, index, base_ms)
        if index >= len(names) and index >= count - n_fuzz:
            value, reason = next(fuzzed(rng, index, base_ms))
            klass = "fuzz"
        else:
            klass = names[index % len(names)]
            if used[klass] >= RARE.get(klass, count):
                klass = "bad_malformed_json"
            used[klass] += 1
            value = CLASSES[klass](trade, rng)
            try:
                parse_trade(value)
            except InvalidTrade as err:
                reason = str(err)
            else:
                raise AssertionError(f"hostile class {klass} parses as a valid trade: {value[:200]!r}")
        key = None if klass in ("tombstone",) and index % 2 else trade["symbol"].encode()
        records.append(HostileRecord(klass, key, value, reason))
    return records


def summary(records: list[HostileRecord]) -> Counter:
    return Counter(record.klass for record in records)


def send(records: list[HostileRecord], bootstrap_servers: str, topic: str) -> list[tuple[int, int]]:
    """Sends the records in order; returns (partition, offset) of each."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=20,
                             max_request_size=2_000_000)
    try:
        futures = [producer.send(topic, key=record.key, value=record.value) for record in records]
        producer.flush(60)
        return [(meta.partition, meta.offset) for meta in (future.get(30) for future in futures)]
    finally:
        producer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generator.hostile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="records (default 1000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--base-ms", type=int, default=DEFAULT_BASE_MS,
                        help="event times of the valid fields lie in the hour before this epoch ms")
    parser.add_argument("--topic", help="send to this Kafka topic ([kafka] bootstrap_servers)")
    parser.add_argument("--output", help="write the labelled corpus as JSON lines to this file")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.exit(2, f"{parser.prog}: error: --count must be >= 1\n")
    records = corpus(args.count, args.seed, args.base_ms)
    if args.output:
        try:
            with open(args.output, "w") as out:
                for record in records:
                    out.write(json.dumps(record.label()) + "\n")
        except OSError as err:
            print(f"{parser.prog}: cannot write {args.output}: {err.strerror}", file=sys.stderr)
            return 1
    if args.topic:
        from marketpulse.config import load_settings

        try:
            send(records, load_settings().kafka.bootstrap_servers, args.topic)
        except Exception as err:  # one line, not a traceback
            print(f"{parser.prog}: sending to {args.topic} failed: {err}", file=sys.stderr)
            return 1
    for klass, n in sorted(summary(records).items()):
        print(f"{klass:28s} {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
