"""The dashboard load benchmark's pure parts (bench/dashboard_load.py): Dash callback payloads built from the
app's own layout and callback map, the request mix, latency summaries and the 1M-row fill's rows."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

# The callbacks a browser sends on every refresh tick, by one of their outputs: the context first (the views'
# input), then every view (each answers no_update unless its tab is open: cheap, but still a request the
# browser makes) and the alert strip.
CONTEXT = "context.data"
VIEWS = {"overview": "watchlist.children", "symbol": "candles-graph.figure",
         "anomalies": "anomaly-table.children", "health": "health-cluster.children",
         "quality": "quality-summary.children"}
ALERT_STRIP = "alert-strip-items.children"
TICK_CALLBACKS = (CONTEXT, *VIEWS.values(), ALERT_STRIP)
RANGES = ("15m", "1h", "5m", "1d", "all")


def outputs(output: str) -> list[dict] | dict:
    """A callback map key ("..a.b...c.d.." for several outputs, "a.b" for one) as the renderer sends it:
    a list of {id, property} for several, one dict for one. Component ids here are plain strings. Pure."""
    def one(spec: str) -> dict:
        component, prop = spec.rsplit(".", 1)
        return {"id": component, "property": prop}

    if output.startswith("..") and output.endswith(".."):
        return [one(spec) for spec in output[2:-2].split("...")]
    return one(output)


def layout_props(layout) -> dict[str, dict]:
    """{component id: its props} for every component with an id in a /_dash-layout tree. Pure."""
    found: dict[str, dict] = {}
    stack = [layout]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            props = node.get("props")
            if isinstance(props, dict):
                if isinstance(props.get("id"), str):
                    found[props["id"]] = props
                stack.extend(value for value in props.values() if isinstance(value, list | dict))
    return found


def find_callback(dependencies: list[dict], output: str) -> dict:
    """The server-side callback (of /_dash-dependencies) one of whose outputs is `output`."""
    for dep in dependencies:
        if dep.get("clientside_function") is None and output in dep["output"].strip(".").split("..."):
            return dep
    raise LookupError(f"no server-side callback has the output {output}")


def payload(dep: dict, values: dict[str, object], changed: Sequence[str]) -> dict:
    """The POST body of /_dash-update-component for callback `dep`, every input and state valued from
    `values` ("id.property" -> value; absent: None), `changed` the props that triggered it. Pure."""
    def valued(items):
        return [{"id": item["id"], "property": item["property"],
                 "value": values.get(f"{item['id']}.{item['property']}")} for item in items]

    return {"output": dep["output"], "outputs": outputs(dep["output"]), "inputs": valued(dep["inputs"]),
            "state": valued(dep.get("state", [])), "changedPropIds": list(changed)}


@dataclass(frozen=True)
class ClientPlan:
    """What one simulated browser shows: a tab, a range, a symbol for the symbol view."""
    tab: str
    range_key: str
    symbol: str | None


def plans(clients: int, symbols: Sequence[str]) -> list[ClientPlan]:
    """Clients spread over the views and ranges (not in step, so every view meets every range). Pure."""
    tabs = list(VIEWS)
    return [ClientPlan(tab=tabs[i % len(tabs)], range_key=RANGES[(i // len(tabs) + i) % len(RANGES)],
                       symbol=symbols[i % len(symbols)] if symbols else None) for i in range(clients)]


def api_paths(symbols: Sequence[str], rng: random.Random) -> str:
    """One JSON API request as a client would make it. Pure given rng."""
    symbol = rng.choice(symbols) if symbols else "AAPL"
    choice = rng.random()
    if choice < 0.45:
        return f"/api/metrics?symbol={symbol}"
    if choice < 0.75:
        return rng.choice(["/api/anomalies", f"/api/anomalies?symbol={symbol}&limit=50"])
    if choice < 0.9:
        return "/api/symbols"
    return "/api/health"


def api_probability(api_share: float, tick_requests: int = len(TICK_CALLBACKS)) -> float:
    """The chance an iteration is one API request rather than a tick of `tick_requests` callbacks, such
    that API requests are `api_share` of all requests. Pure."""
    if not 0 <= api_share <= 1:
        raise ValueError(f"api share {api_share} is not in [0, 1]")
    return tick_requests * api_share / (1 - api_share + tick_requests * api_share)


def api_per_tick(api_share: float, tick_requests: int = len(TICK_CALLBACKS)) -> int:
    """Paced clients: API requests after each tick, so that they are about `api_share` of all. Pure."""
    if not 0 <= api_share < 1:
        raise ValueError(f"api share {api_share} is not in [0, 1) (paced clients send ticks)")
    return round(tick_requests * api_share / (1 - api_share))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in [0, 100]). Pure."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class Summary:
    name: str
    requests: int
    errors: int
    rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def summarize(name: str, latencies: Iterable[float], errors: int, seconds: float) -> Summary:
    values = sorted(latencies)
    p50, p95, p99 = (percentile(values, q) * 1000 for q in (50, 95, 99))
    return Summary(name, len(values), errors, len(values) / seconds if seconds else math.nan, p50, p95, p99)


def summary_lines(title: str, rows: Sequence[Summary]) -> list[str]:
    lines = [title, f"  {'endpoint':<28}{'requests':>9}{'errors':>8}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}"
                    f"{'p99 ms':>9}"]
    for row in rows:
        lines.append(f"  {row.name:<28}{row.requests:>9,}{row.errors:>8}{row.rate:>8.1f}{row.p50_ms:>9.1f}"
                     f"{row.p95_ms:>9.1f}{row.p99_ms:>9.1f}")
    return lines


def fill_frame(symbols: Sequence[str], engine: str, window_seconds: int, start: datetime, end: datetime,
               seed: int = 7) -> pd.DataFrame:
    """window_metrics rows for every symbol and window in [start, end): a random walk per symbol with
    consistent OHLC, VWAP and counts. Pure given the seed."""
    rng = np.random.default_rng(seed)
    count = int((end - start).total_seconds() // window_seconds)
    starts = pd.date_range(start, periods=count, freq=f"{window_seconds}s")
    parts = []
    for n, symbol in enumerate(symbols):
        close = 100 + 20 * n + np.cumsum(rng.normal(0, 0.05, count))
        open_ = np.roll(close, 1)
        open_[0] = close[0]
        volume = rng.integers(100, 5000, count)
        trades = rng.integers(5, 80, count)
        high, low = np.maximum(open_, close) + 0.02, np.minimum(open_, close) - 0.02
        vwap = (open_ + close) / 2
        parts.append(pd.DataFrame({
            "engine": engine, "symbol": symbol, "window_seconds": window_seconds, "window_start": starts,
            "window_end": starts + pd.Timedelta(seconds=window_seconds), "open": open_, "high": high,
            "low": low, "close": close, "vwap": vwap, "volume": volume, "notional": vwap * volume,
            "trade_count": trades, "buy_count": trades // 2, "sell_count": trades - trades // 2,
            "min_price": low, "max_price": high, "avg_price": vwap, "stddev_price": 0.01}))
    return pd.concat(parts, ignore_index=True)


def fill_span(rows: int, symbols: int, window_seconds: int, before: datetime) -> tuple[datetime, datetime]:
    """[start, end) holding `rows` windows of `symbols` symbols, ending at the whole UTC hour at or before
    `before` (so the fill's hours of window_metrics_hourly hold only its own rows). Pure."""
    end = before.replace(minute=0, second=0, microsecond=0)
    per_symbol = -(-rows // symbols)
    return end - timedelta(seconds=per_symbol * window_seconds), end
