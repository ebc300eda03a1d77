"""The synthetic market's model: random streams, prices, sizes and the universe of symbols.

Random streams: every draw comes from a generator seeded by (seed, symbol, purpose), so a symbol's trades do
not depend on which other symbols are generated (the basis of sharding), and each concern (arrivals, prices,
injections...) has its own stream, so turning on bad records or anomalies does not change the price path.

Prices: geometric Brownian motion in event time, one instance per symbol,

    log S(t+dt) = log S(t) + (mu - sigma^2 / 2) dt + sigma sqrt(dt) Z,   Z ~ N(0, 1)

with mu and sigma annualised and time in trading years (252 days of 6.5 hours), so a realistic annual
volatility gives realistic intraday moves. Prices are quoted rounded to the tick size; the model keeps the
exact value so rounding never accumulates. Sizes: lognormal around a median, in whole shares (at least 1).

Universe: the ten default tickers carry realistic prices and volatilities and their real company, sector
and exchange; any other ticker (from --symbols or --universe N) gets parameters drawn from a random stream
seeded by (seed, symbol), so a symbol's parameters never depend on what else is in the universe, and a
company name, sector and exchange from faker, seeded the same way.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import asdict, dataclass

from faker import Faker

from marketpulse.trade import SYMBOL_PATTERN

# --- random streams per (seed, symbol, purpose) ---

def _digest(*parts: object) -> bytes:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()


def derived_rng(seed: int, *parts: object) -> random.Random:
    """A random.Random seeded from the seed and the given parts (stable across processes and runs)."""
    return random.Random(int.from_bytes(_digest(seed, *parts)[:8], "big"))


def derived_int(seed: int, *parts: object) -> int:
    return int.from_bytes(_digest(seed, *parts)[:8], "big")


def run_token(seed: int, start_ms: int) -> str:
    """Six hex digits in every trade id: the same for a seeded run, different for two wall-clock runs, so two
    runs into the same topic never share trade ids."""
    return _digest("run", seed, start_ms).hex()[:6]


# --- prices and sizes ---

TRADING_SECONDS_PER_YEAR = 252 * 6.5 * 3600
TICK = 0.01


class GbmPriceModel:
    def __init__(self, start_price: float, drift: float, volatility: float, rng: random.Random,
                 tick: float = TICK):
        if start_price <= 0:
            raise ValueError(f"start price must be positive: {start_price}")
        if volatility < 0:
            raise ValueError(f"volatility must be >= 0: {volatility}")
        self.drift = drift
        self.volatility = volatility
        self.tick = tick
        self.log_price = math.log(start_price)
        self._rng = rng

    @property
    def price(self) -> float:
        """The exact (unrounded) model price."""
        return math.exp(self.log_price)

    def advance(self, dt_seconds: float) -> float:
        """Moves the price forward by dt seconds of event time; returns the exact new price."""
        dt = dt_seconds / TRADING_SECONDS_PER_YEAR
        sigma = self.volatility
        self.log_price += (self.drift - 0.5 * sigma * sigma) * dt + sigma * math.sqrt(dt) * self._rng.gauss()
        return math.exp(self.log_price)

    def quote(self, price: float | None = None) -> float:
        """A price rounded to the tick, never below one tick (a trade price is always positive)."""
        value = self.price if price is None else price
        ticks = max(1, round(value / self.tick))
        return round(ticks * self.tick, 2)

    def log_return_moments(self, dt_seconds: float) -> tuple[float, float]:
        """Expected mean and standard deviation of one log return over dt seconds (used by the tests)."""
        dt = dt_seconds / TRADING_SECONDS_PER_YEAR
        return (self.drift - 0.5 * self.volatility**2) * dt, self.volatility * math.sqrt(dt)


class LognormalSizes:
    def __init__(self, median: float, sigma: float, rng: random.Random):
        self.mu = math.log(median)
        self.sigma = sigma
        self._rng = rng

    def draw(self) -> int:
        return max(1, int(self._rng.lognormvariate(self.mu, self.sigma) + 0.5))


# --- the universe of symbols ---

# ticker: (start price USD, annual volatility, relative trading activity)
DEFAULT_PARAMETERS: dict[str, tuple[float, float, float]] = {
    "AAPL": (230.0, 0.25, 1.5),
    "GOOGL": (170.0, 0.30, 1.2),
    "MSFT": (420.0, 0.24, 1.2),
    "AMZN": (190.0, 0.32, 1.2),
    "TSLA": (250.0, 0.60, 1.5),
    "META": (560.0, 0.38, 1.0),
    "NVDA": (130.0, 0.50, 1.5),
    "JPM": (230.0, 0.22, 0.8),
    "V": (300.0, 0.18, 0.6),
    "WMT": (90.0, 0.16, 0.8),
}
# The real companies behind the default tickers (a dashboard showing "AAPL — Smith and Sons, Energy" would
# look broken); every other ticker gets a faker company, sector and exchange.
KNOWN_COMPANIES: dict[str, tuple[str, str, str]] = {
    "AAPL": ("Apple Inc.", "Technology", "NASDAQ"),
    "GOOGL": ("Alphabet Inc.", "Communication Services", "NASDAQ"),
    "MSFT": ("Microsoft Corporation", "Technology", "NASDAQ"),
    "AMZN": ("Amazon.com, Inc.", "Consumer Discretionary", "NASDAQ"),
    "TSLA": ("Tesla, Inc.", "Consumer Discretionary", "NASDAQ"),
    "META": ("Meta Platforms, Inc.", "Communication Services", "NASDAQ"),
    "NVDA": ("NVIDIA Corporation", "Technology", "NASDAQ"),
    "JPM": ("JPMorgan Chase & Co.", "Financials", "NYSE"),
    "V": ("Visa Inc.", "Financials", "NYSE"),
    "WMT": ("Walmart Inc.", "Consumer Staples", "NYSE"),
}
DEFAULT_SYMBOLS = tuple(DEFAULT_PARAMETERS)
SECTORS = (
    "Technology", "Communication Services", "Consumer Discretionary", "Consumer Staples", "Energy",
    "Financials", "Health Care", "Industrials", "Materials", "Real Estate", "Utilities",
)
EXCHANGES = ("NASDAQ", "NYSE")
ANNUAL_DRIFT = 0.05
MEDIAN_SIZE = 100


@dataclass(frozen=True)
class SymbolSpec:
    symbol: str
    company: str
    sector: str
    exchange: str
    start_price: float
    volatility: float  # annualised
    drift: float  # annualised
    weight: float  # share of the trade rate, relative to the other symbols
    median_size: int

    def reference(self) -> dict:
        """The record published to the reference topic (and upserted into Postgres `symbols`)."""
        return {
            "symbol": self.symbol, "company": self.company, "sector": self.sector,
            "exchange": self.exchange, "start_price": self.start_price, "volatility": self.volatility,
        }

    def as_dict(self) -> dict:
        return asdict(self)


def synthetic_tickers(count: int) -> list[str]:
    """`--universe N`: the default tickers first, then SYM0011, SYM0012, ... up to N symbols."""
    tickers = list(DEFAULT_SYMBOLS[:count])
    tickers += [f"SYM{i:04d}" for i in range(len(tickers) + 1, count + 1)]
    return tickers


def check_ticker(symbol: str) -> str:
    if not SYMBOL_PATTERN.match(symbol):
        raise ValueError(
            f"invalid ticker {symbol!r}: an upper-case letter, then up to 11 of A-Z 0-9 . -"
        )
    return symbol


def build_universe(tickers: list[str], seed: int) -> list[SymbolSpec]:
    seen = set()
    specs = []
    faker = Faker("en_US")  # one instance re-seeded per symbol: creating one per symbol is slow
    for ticker in tickers:
        check_ticker(ticker)
        if ticker in seen:
            raise ValueError(f"ticker {ticker!r} given twice")
        seen.add(ticker)
        rng = derived_rng(seed, ticker, "parameters")
        if ticker in DEFAULT_PARAMETERS:
            price, vol, weight = DEFAULT_PARAMETERS[ticker]
        else:
            # Lognormal around $60 (a penny stock to a few thousand dollars), 15-80 % annual volatility.
            price = round(min(3000.0, max(2.0, math.exp(rng.gauss(math.log(60.0), 1.0)))), 2)
            vol = round(rng.uniform(0.15, 0.8), 3)
            weight = round(rng.uniform(0.3, 1.5), 3)
        if ticker in KNOWN_COMPANIES:
            company, sector, exchange = KNOWN_COMPANIES[ticker]
        else:
            faker.seed_instance(derived_int(seed, ticker, "reference"))
            company = faker.company()
            sector = faker.random_element(SECTORS)
            exchange = faker.random_element(EXCHANGES)
        specs.append(SymbolSpec(
            symbol=ticker,
            company=company,
            sector=sector,
            exchange=exchange,
            start_price=price,
            volatility=vol,
            drift=ANNUAL_DRIFT,
            weight=weight,
            median_size=MEDIAN_SIZE,
        ))
    return specs
