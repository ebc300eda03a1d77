"""A live source end to end without the network: `python -m generator --source alphavantage` polls a local
HTTP stub that answers with the recorded responses of tests/fixtures/live/ (two overlapping polls per
symbol), into a topic of the test's own, three times (the second and third are restarts that resume from
Kafka). The topic must hold every bar's prints exactly once; then both engines read it into a scratch
database and their windows must equal the reference computed from the fixture bars: 60 s windows carry
each bar's open/high/low/close/volume, and every column of both window sizes equals tests/reference.py over
the bars' prints. The one-line errors (bad key, unknown symbol, rate limit, no network) are checked on the
same stub."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from kafka import KafkaConsumer, TopicPartition

from generator.live import bar_trades
from generator.live_sources import parse_alphavantage
from marketpulse.trade import Trade, parse_trade
from tests import support
from tests.pipeline import (
    FLUSH_SYMBOL,
    RESULT_TIMEOUT,
    engine_windows,
    reference_for,
    send,
    submit_datastream,
    submit_sql,
    wait_for_slots,
    window_differences,
)

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "live"
SYMBOLS = ("IBM", "MSFT")
PARTITIONS = 2
ENGINES = ("sql", "datastream")


def alphavantage_answer(path: str, requests: dict[str, int]) -> bytes:
    """apikey=bad: invalid key; apikey=limited: rate limit; symbol NOPE: unknown; else poll1, then poll2."""
    query = {key: values[0] for key, values in parse_qs(urlsplit(path).query).items()}
    symbol = query.get("symbol", "")
    if query.get("apikey") == "bad":
        name = "alphavantage_invalid_key.json"
    elif query.get("apikey") == "limited":
        name = "alphavantage_rate_limit.json"
    elif symbol not in SYMBOLS:
        name = "alphavantage_unknown_symbol.json"
    else:
        seen = requests[symbol] = requests.get(symbol, 0) + 1
        name = f"alphavantage_{symbol}_1min_poll{1 if seen == 1 else 2}.json"
    return (FIXTURES / name).read_bytes()


@pytest.fixture
def stub():
    requests: dict[str, int] = {}
    with support.http_stub(lambda path: alphavantage_answer(path, requests)) as url:
        yield f"{url}/query"


def generator(settings, url: str, topic: str, symbols: str = ",".join(SYMBOLS), key: str = "demo"):
    env = support.env_for(settings, live_alphavantage_url=url, live_backoff_initial_seconds="0.1")
    env["MARKETPULSE_ALPHAVANTAGE_API_KEY"] = key
    command = [sys.executable, "-m", "generator", "--source", "alphavantage", "--symbols", symbols, "--once",
               "--ignore-calendar", "--topic", topic]
    return subprocess.run(command, cwd=support.REPO, env=env, capture_output=True, text=True, timeout=120)


def fixture_bars():
    """Every distinct bar of both polls, per symbol, oldest first."""
    bars = {}
    for symbol in SYMBOLS:
        for poll in (1, 2):
            document = json.loads((FIXTURES / f"alphavantage_{symbol}_1min_poll{poll}.json").read_text())
            for bar in parse_alphavantage(document, symbol, 60):
                bars[(symbol, bar.start_ms)] = bar
    return [bars[key] for key in sorted(bars)]


def topic_trades(settings, topic: str) -> list[Trade]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        trades = []
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for records in consumer.poll(timeout_ms=5000).values():
                trades += [parse_trade(record.value) for record in records]
        return trades
    finally:
        consumer.close()


def test_fixture_bars_reach_both_engines_once(stack, stub, kafka_topic, scratch_db, jobs):
    settings = stack
    topic = kafka_topic("live.trades", partitions=PARTITIONS)
    outputs = [generator(settings, stub, topic) for _run in range(3)]  # poll1; restart + poll2; again
    for result in outputs:
        assert result.returncode == 0, result.stderr[-3000:]
    print("\n" + "\n".join(line for result in outputs for line in result.stderr.splitlines()))
    assert "resuming after the last alphavantage bars" in outputs[1].stderr

    bars = fixture_bars()
    expected = [trade for bar in bars for trade in bar_trades(bar, "alphavantage")]
    published = topic_trades(settings, topic)
    ids = [trade.trade_id for trade in published]
    duplicates = len(ids) - len(set(ids))
    print(f"{len(bars)} distinct fixture bars (2 polls x 10 per symbol, 5 overlapping), {len(published)} "
          f"trades on the topic after 3 runs, {duplicates} duplicates")
    assert duplicates == 0
    assert sorted(published, key=lambda t: t.trade_id) == sorted(expected, key=lambda t: t.trade_id)

    wait_for_slots(settings, PARTITIONS + 1)
    jobs.append(submit_sql(settings, scratch_db, topic, "sql/window_metrics.sql"))
    jobs.append(submit_datastream(settings, scratch_db, topic, kafka_topic("live.anomalies"),
                                  windows_idleness_seconds="0"))
    flush_at = max(t.event_time for t in expected) + 3_600_000
    flush = [Trade(f"FLUSH-{p}", FLUSH_SYMBOL, 1.0, 1, "BUY", flush_at) for p in range(PARTITIONS)]
    send(settings, topic, flush, partition_of=lambda trade: int(trade.trade_id[-1]))

    sizes = (settings.windows.size_seconds, settings.windows.short_size_seconds)
    reference = reference_for(expected, sizes)

    def settled():
        got = {engine: engine_windows(scratch_db, engine) for engine in ENGINES}
        return got if all(set(rows) == set(reference) for rows in got.values()) else None

    got = support.wait_for(settled, RESULT_TIMEOUT, "both engines' windows of the fixture bars", interval=2)
    for engine in ENGINES:
        missing, extra, different = window_differences(got[engine], reference)
        assert not (missing or extra or different), (engine, missing[:5], extra[:5], different[:5])
        # Independently of the prints: each 60 s window is its bar.
        for bar in bars:
            row = got[engine][(bar.symbol, 60, bar.start_ms)]
            assert (row["open"], row["high"], row["low"], row["close"], row["volume"]) == (
                bar.open, bar.high, bar.low, bar.close, bar.volume)
    print(f"windows = reference for both engines: {len(reference)} windows "
          f"({sum(1 for key in reference if key[1] == 60)} of 60 s, one per bar)")


def test_failures_are_one_line_errors(stack, stub, kafka_topic):
    topic = kafka_topic("live.errors")
    cases = {
        "bad API key": generator(stack, stub, topic, key="bad"),
        "unknown symbol": generator(stack, stub, topic, symbols="NOPE"),
        "rate limit": generator(stack, stub, topic, key="limited"),
        "no network": generator(stack, "http://127.0.0.1:1/query", topic),
    }
    printed = {case: result.stderr.strip().splitlines()[-1] for case, result in cases.items()}
    print("\n" + "\n".join(f"{case:15s} exit {cases[case].returncode}: {line}"
                           for case, line in printed.items()))
    assert all(result.returncode == 1 for result in cases.values())
    assert all("Traceback" not in result.stderr for result in cases.values())
    assert printed == {
        "bad API key": "generator: error: bad API key: Alpha Vantage rejected it",
        "unknown symbol": "generator: error: no symbol left to poll (every one was unknown to the source)",
        "rate limit": "generator: error: Alpha Vantage: rate limit reached (free tier: 25 requests a day) "
                      "(gave up after 3 attempts)",
        "no network": "generator: error: no network: cannot reach 127.0.0.1:1 ([Errno 111] Connection "
                      "refused) (gave up after 3 attempts)",
    }
    assert "unknown symbol: Alpha Vantage has no intraday series for NOPE; dropping it" in \
        cases["unknown symbol"].stderr


def test_the_market_state_reaches_the_dashboard(stack, stub, kafka_topic, scratch_db):
    """--status-to-postgres records the calendar's verdict; the dashboard's banner says 'Market closed' when
    it is (on the real clock: which of the two depends on when the test runs, and both are checked)."""
    from datetime import UTC, datetime

    from dashboard import context, queries
    from dashboard.db import Database
    from generator.live import TradingCalendar
    from marketpulse.config import postgres_dsn

    topic = kafka_topic("live.status")
    env = support.env_for(scratch_db, live_alphavantage_url=stub)
    env["MARKETPULSE_ALPHAVANTAGE_API_KEY"] = "demo"
    command = [sys.executable, "-m", "generator", "--source", "alphavantage", "--symbols", "IBM", "--once",
               "--status-to-postgres", "--topic", topic]
    result = subprocess.run(command, cwd=support.REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    want = TradingCalendar(stack.live.exchange).status(datetime.now(UTC))
    print("\n" + result.stderr)
    assert want.line() in result.stderr
    status = queries.market_status(Database(postgres_dsn(scratch_db, "reader")))
    assert list(status["source"]) == ["alphavantage"] and bool(status["is_open"].iloc[0]) == want.is_open
    banner = context.market_banner(status)
    if want.is_open:
        assert banner is None
    else:
        text = "".join(str(part.children if hasattr(part, "children") else part) for part in banner)
        assert text.startswith("Market closed. XNYS is closed; the live source (alphavantage) sends nothing "
                               f"until it opens at {want.next_open:%Y-%m-%d %H:%M:%S} UTC.")
