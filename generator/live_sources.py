"""Real market data: intraday bars from Yahoo Finance (the `yfinance` package) and Alpha Vantage
(`TIME_SERIES_INTRADAY` over HTTP), behind one interface, `BarSource.fetch(symbol) -> list[Bar]`.

A source only fetches and parses: it returns every bar the API gave (overlapping earlier polls, the
still-forming last bar included) and raises `LiveSourceError` with a one-line message on every failure a
user can hit (no network, bad API key, unknown symbol, rate limit). What to emit, when to poll, back-off and
dedup are generator/live.py's business.

Both APIs are reached through a function that can be replaced (`http_get` for Alpha Vantage, `history` for
Yahoo), so the tests drive the real parsing with recorded responses (tests/fixtures/live/), without the
network.
"""

from __future__ import annotations

import json
import logging
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

INTERVALS_S = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "60m": 3600}


@dataclass(frozen=True)
class Bar:
    symbol: str
    start_ms: int  # epoch ms of the bar's first instant
    interval_s: int
    open: float
    high: float
    low: float
    close: float
    volume: int

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.interval_s * 1000


class LiveSourceError(RuntimeError):
    """A failure to report in one line. `retry`: worth trying again later (network, rate limit, 5xx)."""

    def __init__(self, message: str, *, retry: bool = False, rate_limited: bool = False):
        super().__init__(message)
        self.retry = retry or rate_limited
        self.rate_limited = rate_limited


class BarSource:
    name = "source"
    interval_s = 60

    def fetch(self, symbol: str) -> list[Bar]:
        raise NotImplementedError


def valid_bar(bar: Bar) -> bool:
    """A bar the trade contract can carry: finite positive prices with low <= open, close <= high."""
    prices = (bar.open, bar.high, bar.low, bar.close)
    return (all(math.isfinite(p) and p > 0 for p in prices) and bar.low <= min(bar.open, bar.close)
            and bar.high >= max(bar.open, bar.close) and bar.volume >= 0)


# --- Alpha Vantage ------------------------------------------------------------------------------------

def http_get(url: str, timeout: float) -> tuple[int, bytes]:
    """(status, body) of a GET; raises LiveSourceError(retry=True) when the network fails."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read() or b""
    except (urllib.error.URLError, OSError) as err:
        host = urllib.parse.urlsplit(url).netloc
        raise LiveSourceError(f"no network: cannot reach {host} ({getattr(err, 'reason', err)})",
                              retry=True) from None


class AlphaVantageSource(BarSource):
    """TIME_SERIES_INTRADAY (https://www.alphavantage.co/documentation/#intraday). Times in the response are
    in its "6. Time Zone" (US/Eastern); outputsize=compact returns the latest 100 bars."""

    name = "alphavantage"

    def __init__(self, api_key: str, interval: str = "1m", base_url: str = "https://www.alphavantage.co/query",
                 timeout: float = 20.0, get: Callable[[str, float], tuple[int, bytes]] = http_get):
        if not api_key:
            raise LiveSourceError("bad API key: none given (set MARKETPULSE_ALPHAVANTAGE_API_KEY or "
                                  "[live] alphavantage_api_key_file)")
        if interval not in INTERVALS_S:
            raise LiveSourceError(f"interval {interval!r} not offered; one of {', '.join(INTERVALS_S)}")
        self.api_key, self.base_url, self.timeout, self.get = api_key, base_url, timeout, get
        self.interval, self.interval_s = interval, INTERVALS_S[interval]

    def url(self, symbol: str) -> str:
        query = {"function": "TIME_SERIES_INTRADAY", "symbol": symbol,
                 "interval": self.interval.replace("m", "min"), "outputsize": "compact", "datatype": "json",
                 "apikey": self.api_key}
        return f"{self.base_url}?{urllib.parse.urlencode(query)}"

    def fetch(self, symbol: str) -> list[Bar]:
        status, body = self.get(self.url(symbol), self.timeout)
        if status == 429:
            raise LiveSourceError("Alpha Vantage: rate limit (HTTP 429)", rate_limited=True)
        if status >= 500:
            raise LiveSourceError(f"Alpha Vantage: server error (HTTP {status})", retry=True)
        if status != 200:
            raise LiveSourceError(f"Alpha Vantage: HTTP {status}")
        try:
            document = json.loads(body)
        except ValueError:
            raise LiveSourceError("Alpha Vantage: the answer is not JSON", retry=True) from None
        return parse_alphavantage(document, symbol, self.interval_s)


def parse_alphavantage(document: dict, symbol: str, interval_s: int) -> list[Bar]:
    """Bars of a TIME_SERIES_INTRADAY answer, oldest first; its error documents as LiveSourceError."""
    if not isinstance(document, dict):
        raise LiveSourceError("Alpha Vantage: unexpected answer (not a JSON object)")
    message = str(document.get("Error Message") or document.get("Information") or document.get("Note") or "")
    if "apikey" in message.lower() and ("invalid" in message.lower() or "missing" in message.lower()):
        raise LiveSourceError("bad API key: Alpha Vantage rejected it")
    if "rate limit" in message.lower() or "call frequency" in message.lower() or "requests per" in message:
        raise LiveSourceError("Alpha Vantage: rate limit reached (free tier: 25 requests a day)",
                              rate_limited=True)
    if document.get("Error Message"):
        raise LiveSourceError(f"unknown symbol: Alpha Vantage has no intraday series for {symbol}")
    series_key = next((key for key in document if key.startswith("Time Series")), None)
    if series_key is None:
        detail = message[:120] or "no series"
        raise LiveSourceError(f"Alpha Vantage: unexpected answer for {symbol} ({detail})")
    zone = ZoneInfo(document.get("Meta Data", {}).get("6. Time Zone", "US/Eastern"))
    bars = []
    for stamp, values in document[series_key].items():
        start = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)
        bars.append(Bar(symbol=symbol, start_ms=int(start.timestamp() * 1000), interval_s=interval_s,
                        open=float(values["1. open"]), high=float(values["2. high"]),
                        low=float(values["3. low"]), close=float(values["4. close"]),
                        volume=int(float(values["5. volume"]))))
    return sorted(bars, key=lambda bar: bar.start_ms)


# --- Yahoo Finance --------------------------------------------------------------------------------------

def yfinance_history(symbol: str, interval: str):
    """The last day of `interval` bars from yfinance, raising instead of logging its errors."""
    import yfinance

    logging.getLogger("yfinance").setLevel(logging.CRITICAL)  # its errors come back raised, in one line
    return yfinance.Ticker(symbol).history(period="1d", interval=interval, prepost=False, auto_adjust=False,
                                           actions=False, raise_errors=True)


class YahooSource(BarSource):
    """Yahoo Finance intraday bars via yfinance (1-minute bars are its finest; about 30 days are kept)."""

    name = "yahoo"

    def __init__(self, interval: str = "1m", history: Callable = yfinance_history):
        if interval not in INTERVALS_S:
            raise LiveSourceError(f"interval {interval!r} not offered; one of {', '.join(INTERVALS_S)}")
        self.interval, self.interval_s, self.history = interval, INTERVALS_S[interval], history

    def fetch(self, symbol: str) -> list[Bar]:
        try:
            frame = self.history(symbol, self.interval)
        except LiveSourceError:
            raise
        except Exception as err:  # yfinance raises its own, requests' and curl_cffi's exceptions
            raise yahoo_error(symbol, err) from None
        return parse_yahoo(frame, symbol, self.interval_s)


def yahoo_error(symbol: str, err: Exception) -> LiveSourceError:
    """One line for what yfinance raised. Network first: without a network yfinance may also report a
    missing timezone, which would otherwise read as an unknown symbol."""
    text = f"{type(err).__name__}: {err}".splitlines()[0]
    lowered = text.lower()
    host = re.search(r"resolve host:? ([\w.-]+)", text)
    if host:
        return LiveSourceError(f"no network: cannot resolve {host.group(1).rstrip('.')}", retry=True)
    if any(word in lowered for word in ("dnserror", "connect", "timed out", "timeout", "network", "curl:")):
        return LiveSourceError(f"no network: cannot reach Yahoo Finance ({text[:100]})", retry=True)
    if "429" in lowered or "too many requests" in lowered or "rate limit" in lowered:
        return LiveSourceError("Yahoo Finance: rate limit (too many requests)", rate_limited=True)
    if "delisted" in lowered or "no price data" in lowered or "no timezone" in lowered or "404" in lowered:
        return LiveSourceError(f"unknown symbol: Yahoo Finance has no data for {symbol}")
    return LiveSourceError(f"Yahoo Finance: {text[:160]}", retry=True)


def parse_yahoo(frame, symbol: str, interval_s: int) -> list[Bar]:
    """Bars of a yfinance history frame (tz-aware DatetimeIndex; Open/High/Low/Close/Volume), oldest
    first."""
    if frame is None or len(frame) == 0:
        raise LiveSourceError(f"unknown symbol: Yahoo Finance has no data for {symbol}")
    bars = []
    for stamp, row in frame.iterrows():
        if any(math.isnan(float(row[column])) for column in ("Open", "High", "Low", "Close")):
            continue  # a minute Yahoo lists without a print
        bars.append(Bar(symbol=symbol, start_ms=int(stamp.timestamp() * 1000), interval_s=interval_s,
                        open=float(row["Open"]), high=float(row["High"]), low=float(row["Low"]),
                        close=float(row["Close"]), volume=int(row["Volume"] or 0)))
    return sorted(bars, key=lambda bar: bar.start_ms)
