"""Live sources without the network: Alpha Vantage and Yahoo answers recorded in tests/fixtures/live/ (written
from the documented response formats), the bar -> trades conversion against the bars themselves, dedup
across overlapping polls, the request budget, back-off, the trading calendar and the one-line errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from generator import cli
from generator.live import (
    Backoff,
    LiveRunner,
    MarketStatus,
    RequestBudget,
    TradingCalendar,
    bar_trades,
    new_bars,
    next_poll_ms,
    parse_trade_id,
)
from generator.live_sources import (
    AlphaVantageSource,
    Bar,
    BarSource,
    LiveSourceError,
    YahooSource,
    parse_alphavantage,
    yahoo_error,
)
from marketpulse.trade import parse_trade

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "live"
RATE_LIMITED = "Alpha Vantage: rate limit reached (free tier: 25 requests a day)"
NOV_20_1430_ET_MS = int(datetime(2026, 11, 20, 19, 30, tzinfo=UTC).timestamp() * 1000)  # EST = UTC-5


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def yahoo_frame() -> pd.DataFrame:
    frame = pd.read_csv(FIXTURES / "yahoo_AAPL_1m.csv")
    return frame.set_index(pd.DatetimeIndex(pd.to_datetime(frame.pop("Datetime"), utc=True)
                                            .dt.tz_convert("America/New_York")))


# --- parsing --------------------------------------------------------------------------------------------

def test_alphavantage_bars_come_oldest_first_in_utc():
    bars = parse_alphavantage(fixture("alphavantage_IBM_1min_poll1.json"), "IBM", 60)
    assert len(bars) == 10
    assert bars[0].start_ms == NOV_20_1430_ET_MS
    assert [b.start_ms - bars[0].start_ms for b in bars] == [60_000 * i for i in range(10)]
    first = fixture("alphavantage_IBM_1min_poll1.json")["Time Series (1min)"]["2026-11-20 14:30:00"]
    assert (bars[0].open, bars[0].high, bars[0].low, bars[0].close, bars[0].volume) == (
        float(first["1. open"]), float(first["2. high"]), float(first["3. low"]), float(first["4. close"]),
        int(first["5. volume"]))


@pytest.mark.parametrize(("name", "message", "retry"), [
    ("alphavantage_invalid_key.json", "bad API key: Alpha Vantage rejected it", False),
    ("alphavantage_unknown_symbol.json", "unknown symbol: Alpha Vantage has no intraday series for NOPE",
     False),
    ("alphavantage_rate_limit.json", RATE_LIMITED, True),
    ("alphavantage_rate_limit_note.json", RATE_LIMITED, True),
])
def test_alphavantage_errors_are_one_line(name, message, retry):
    with pytest.raises(LiveSourceError) as caught:
        parse_alphavantage(fixture(name), "NOPE", 60)
    assert (str(caught.value), caught.value.retry) == (message, retry)


def test_alphavantage_http_statuses():
    def answer(status):
        return AlphaVantageSource("key", get=lambda url, timeout: (status, b"{}"))

    with pytest.raises(LiveSourceError, match="rate limit") as caught:
        answer(429).fetch("IBM")
    assert caught.value.rate_limited
    with pytest.raises(LiveSourceError, match="server error") as caught:
        answer(503).fetch("IBM")
    assert caught.value.retry
    with pytest.raises(LiveSourceError, match=r"bad API key: none given"):
        AlphaVantageSource("")
    seen = []
    source = AlphaVantageSource("secret", get=lambda url, timeout: seen.append(url) or (
        200, (FIXTURES / "alphavantage_IBM_1min_poll1.json").read_bytes()))
    assert len(source.fetch("IBM")) == 10
    wanted = ("function=TIME_SERIES_INTRADAY", "interval=1min", "apikey=secret")
    assert all(part in seen[0] for part in wanted)


def test_yahoo_bars_skip_minutes_without_a_print():
    bars = YahooSource(history=lambda symbol, interval: yahoo_frame()).fetch("AAPL")
    assert len(bars) == 9
    assert bars[0].start_ms == int(datetime(2026, 11, 20, 20, 50, tzinfo=UTC).timestamp() * 1000)
    assert (bars[0].open, bars[0].high, bars[0].low, bars[0].close, bars[0].volume) == (
        228.31, 228.34, 228.23, 228.28, 81033)
    with pytest.raises(LiveSourceError, match="unknown symbol: Yahoo Finance has no data for NOPE"):
        YahooSource(history=lambda symbol, interval: pd.DataFrame()).fetch("NOPE")


@pytest.mark.parametrize(("raised", "message", "retry"), [
    (RuntimeError("Failed to perform, curl: (6) Could not resolve host: query2.finance.yahoo.com. See"),
     "no network: cannot resolve query2.finance.yahoo.com", True),
    (RuntimeError("$NOPE: possibly delisted; no price data found  (period=1d)"),
     "unknown symbol: Yahoo Finance has no data for NOPE", False),
    (RuntimeError("Too Many Requests. Rate limited. Try after a while."),
     "Yahoo Finance: rate limit (too many requests)", True),
])
def test_yahoo_errors_are_one_line(raised, message, retry):
    err = yahoo_error("NOPE", raised)
    assert (str(err), err.retry) == (message, retry)


# --- bars -> trades -----------------------------------------------------------------------------------------

def bar(start_ms=NOV_20_1430_ET_MS, o=100.0, h=101.0, low=99.5, c=100.5, volume=1001, symbol="IBM"):
    return Bar(symbol, start_ms, 60, o, h, low, c, volume)


def test_a_bars_prints_have_its_ohlcv_inside_its_interval():
    up, down = bar(), bar(o=100.5, c=100.0)
    for b in (up, down):
        trades = bar_trades(b, "alphavantage")
        prices = [t.price for t in trades]
        assert (prices[0], max(prices), min(prices), prices[-1]) == (b.open, b.high, b.low, b.close)
        assert sum(t.size for t in trades) == b.volume
        assert all(b.start_ms <= t.event_time < b.end_ms for t in trades)
        assert [t.event_time for t in trades] == sorted(t.event_time for t in trades)
        for t in trades:  # valid trades by the one contract
            assert parse_trade(t.to_json().encode()) == t
    assert {t.side for t in bar_trades(up, "x")} == {"BUY"}
    assert {t.side for t in bar_trades(down, "x")} == {"SELL"}
    assert [t.trade_id for t in bar_trades(up, "yahoo")] == [
        f"yahoo:IBM:{NOV_20_1430_ET_MS}:{tag}" for tag in "olhc"]
    assert parse_trade_id(f"yahoo:IBM:{NOV_20_1430_ET_MS}:c", "yahoo") == ("IBM", NOV_20_1430_ET_MS)
    assert parse_trade_id(f"yahoo:IBM:{NOV_20_1430_ET_MS}:c", "alphavantage") is None


def test_thin_or_impossible_bars():
    assert [(t.price, t.size) for t in bar_trades(bar(volume=2), "x")] == [(100.5, 2)]
    assert bar_trades(bar(volume=0), "x") == []
    assert bar_trades(bar(h=99.0), "x") == []  # high below open: not a bar


def test_overlapping_polls_give_each_complete_bar_once():
    poll1 = parse_alphavantage(fixture("alphavantage_IBM_1min_poll1.json"), "IBM", 60)
    poll2 = parse_alphavantage(fixture("alphavantage_IBM_1min_poll2.json"), "IBM", 60)
    later = poll2[-1].end_ms + 3_600_000
    first = new_bars(poll1, None, later)
    second = new_bars(poll2, first[-1].start_ms, later)
    assert len(first) == 10 and len(second) == 5
    assert [b.start_ms for b in first + second] == sorted({b.start_ms for b in poll1 + poll2})
    assert new_bars(poll2, second[-1].start_ms, later) == []
    # The bar still forming (its end after now) waits for the next poll.
    assert new_bars(poll1, None, poll1[-1].end_ms - 1) == first[:-1]


def test_polls_are_aligned_to_the_bar_boundary():
    assert next_poll_ms(NOV_20_1430_ET_MS + 2_000, 60, 5) == NOV_20_1430_ET_MS + 5_000
    assert next_poll_ms(NOV_20_1430_ET_MS + 7_000, 60, 5) == NOV_20_1430_ET_MS + 65_000


def test_the_request_budget():
    budget = RequestBudget(per_minute=2, per_day=3)
    budget.take(0.0)
    budget.take(10.0)
    assert budget.wait_s(20.0) == pytest.approx(40.0)  # the third in this minute waits for the first to age
    budget.take(60.0)
    assert budget.wait_s(80.0) == pytest.approx(86400.0 - 80.0)  # the day's three are spent
    assert RequestBudget(0, 0).wait_s(0.0) == 0.0


# --- the poll loop --------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self, now: float):
        self.now, self.slept = now, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class ScriptedSource(BarSource):
    name = "alphavantage"

    def __init__(self, answers: dict):
        self.answers = {symbol: list(items) for symbol, items in answers.items()}

    def fetch(self, symbol: str):
        answer = self.answers[symbol].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def runner(source, symbols, clock, published, said, calendar=None, budget=None, backoff=None):
    return LiveRunner(source, symbols, budget=budget or RequestBudget(0, 0),
                      backoff=backoff or Backoff(2, 60), calendar=calendar, publish=published.extend, last={},
                      clock=clock, sleep=clock.sleep,
                      say=said.append)


def test_rate_limits_back_off_then_the_bars_go_out_once():
    poll1 = parse_alphavantage(fixture("alphavantage_IBM_1min_poll1.json"), "IBM", 60)
    limited = LiveSourceError("Alpha Vantage: rate limit", rate_limited=True)
    clock, published, said = FakeClock(poll1[-1].end_ms / 1000 + 60), [], []
    live = runner(ScriptedSource({"IBM": [limited, limited, poll1, poll1]}), ["IBM"], clock, published, said)
    live.poll_once()
    assert said == ["generator: Alpha Vantage: rate limit; retrying in 2 s",
                    "generator: Alpha Vantage: rate limit; retrying in 4 s"]
    assert sum(clock.slept) == pytest.approx(6.0)
    assert len(published) == 40 and live.bars == 10
    live.poll_once()  # the same bars again: nothing new
    assert len(published) == 40 and len({t.trade_id for t in published}) == 40


def test_once_gives_up_after_three_failures_and_bad_keys_stop_at_once():
    down = LiveSourceError("no network: cannot reach www.alphavantage.co", retry=True)
    clock = FakeClock(1_800_000_000.0)
    live = runner(ScriptedSource({"IBM": [down] * 5}), ["IBM"], clock, [], [], backoff=Backoff(2, 60, 3))
    with pytest.raises(LiveSourceError, match=r"no network: .* \(gave up after 3 attempts\)"):
        live.poll_once()
    bad_key = LiveSourceError("bad API key: Alpha Vantage rejected it")
    with pytest.raises(LiveSourceError, match="bad API key"):
        runner(ScriptedSource({"IBM": [bad_key]}), ["IBM"], clock, [], []).poll_once()


def test_an_unknown_symbol_is_dropped_and_the_others_go_on():
    poll1 = parse_alphavantage(fixture("alphavantage_IBM_1min_poll1.json"), "IBM", 60)
    unknown = LiveSourceError("unknown symbol: Alpha Vantage has no intraday series for NOPE")
    clock, published, said = FakeClock(poll1[-1].end_ms / 1000 + 60), [], []
    source = ScriptedSource({"NOPE": [unknown], "IBM": [poll1]})
    live = runner(source, ["NOPE", "IBM"], clock, published, said)
    live.poll_once()
    assert said == ["generator: unknown symbol: Alpha Vantage has no intraday series for NOPE; dropping it"]
    assert live.symbols == ["IBM"] and len(published) == 40


class FixedCalendar:
    def __init__(self, status: MarketStatus):
        self._status = status

    def status(self, now):
        return self._status


def test_outside_trading_hours_the_source_idles_and_says_so():
    closed = MarketStatus("XNYS", False, datetime(2026, 11, 23, 14, 30, tzinfo=UTC), None)
    clock = FakeClock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC).timestamp())
    published, said, stops = [], [], []
    live = runner(ScriptedSource({"IBM": []}), ["IBM"], clock, published, said,
                  calendar=FixedCalendar(closed))
    live.should_stop = lambda: len(stops.append(1) or stops) > 40
    live.run()
    assert said == ["generator: market closed (XNYS): opens 2026-11-23 14:30 UTC; idling, sending nothing"]
    assert published == [] and live.requests == 0


def test_the_nyse_calendar_knows_weekends_holidays_and_early_closes():
    nyse = TradingCalendar("XNYS")
    sunday = nyse.status(datetime(2026, 11, 22, 17, 0, tzinfo=UTC))
    assert not sunday.is_open and sunday.next_open == datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
    assert nyse.status(datetime(2026, 11, 23, 15, 0, tzinfo=UTC)).is_open
    thanksgiving = nyse.status(datetime(2026, 11, 26, 15, 0, tzinfo=UTC))
    assert not thanksgiving.is_open and thanksgiving.next_open == datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
    friday = nyse.status(datetime(2026, 11, 27, 15, 0, tzinfo=UTC))  # closes at 13:00 New York time
    assert friday.is_open and friday.next_close == datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
    with pytest.raises(LiveSourceError, match="unknown exchange calendar 'NOPE'"):
        TradingCalendar("NOPE")


def test_cli_errors_are_one_line(capsys, monkeypatch):
    monkeypatch.delenv("MARKETPULSE_ALPHAVANTAGE_API_KEY", raising=False)
    assert cli.main(["--source", "alphavantage", "--symbols", "IBM", "--once", "--output", "-"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "generator: error: bad API key: none given (set MARKETPULSE_ALPHAVANTAGE_API_KEY or "
        "[live] alphavantage_api_key_file)")
    with pytest.raises(SystemExit) as exited:
        cli.main(["--source", "replay"])
    assert exited.value.code == 2
    assert "--source replay needs --replay FILE.csv" in capsys.readouterr().err


def test_after_a_poll_round_a_heartbeat_promises_no_print_before_the_slowest_symbols_next_bar():
    """generator/heartbeat.py for live bars: the heartbeat's watermark (time - out-of-orderness - 1 ms) is
    1 ms before the next bar's first print of the symbol furthest behind, so nothing to come is late and
    the window of its last bar closes."""
    from generator.live import live_heartbeat_time

    last = {"IBM": 1_000_000, "MSFT": 940_000}
    assert live_heartbeat_time(last, ["IBM", "MSFT"], 60, 2000) == 940_000 + 60_000 + 2000
    assert live_heartbeat_time(last, ["IBM", "MSFT", "AAPL"], 60, 2000) is None  # AAPL not seen yet
    assert live_heartbeat_time({}, [], 60, 2000) is None


def test_the_runner_beats_after_each_round_but_not_with_once():
    poll1 = parse_alphavantage(fixture("alphavantage_IBM_1min_poll1.json"), "IBM", 60)
    clock, published, said, beats = FakeClock(poll1[-1].end_ms / 1000 + 60), [], [], []

    def live_runner(answers):
        return LiveRunner(ScriptedSource({"IBM": answers}), ["IBM"], budget=RequestBudget(0, 0),
                          backoff=Backoff(2, 60), calendar=None, publish=published.extend, last={},
                          clock=clock, sleep=clock.sleep, say=said.append, heartbeat=beats.append,
                          out_of_orderness_ms=2000, should_stop=lambda: len(said) >= 2)

    live_runner([poll1]).run(once=True)
    assert beats == []
    live_runner([poll1, poll1]).run()
    assert beats == [poll1[-1].start_ms + 60_000 + 2000]
