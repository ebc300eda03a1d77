"""Addressable views: the page's state as a URL and back, so a reload or a shared link shows the same thing.

    /                                  market overview
    /symbol/AAPL                       the symbol view of AAPL
    /anomalies?rule=price_jump&symbol=TSLA
    /quality                           detection quality (anomalies vs the injected ground truth)
    /health
    ...?range=1h&anchor=now&engine=sql&window=10     any view; only values other than the defaults appear

`parse` never fails: an unknown view, range or rule in a hand-edited URL falls back to its default (the
dashboard shows something sensible rather than an error page). `to_url` is its inverse for valid routes.
Pure; the callback that keeps the controls and the URL in step is in dashboard.shell."""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import parse_qs, quote, urlencode

from dashboard import queries
from marketpulse.trade import SYMBOL_PATTERN

VIEWS = ("overview", "symbol", "anomalies", "quality", "health")
DEFAULT_RANGE = "15m"
ANCHORS = ("latest", "now")


@dataclass(frozen=True)
class Route:
    view: str = "overview"
    symbol: str | None = None  # the symbol view's symbol
    rule: str | None = None  # the anomalies view's filters
    filter_symbol: str | None = None
    range_key: str = DEFAULT_RANGE
    anchor: str = "latest"
    engine: str = queries.ENGINES[0]
    window_seconds: int | None = None  # None: the configured window size

    def with_defaults(self, window_seconds: int) -> Route:
        return self if self.window_seconds is not None else replace(self, window_seconds=window_seconds)


def valid_symbol(text: str | None) -> str | None:
    return text if text and SYMBOL_PATTERN.fullmatch(text) else None


def parse(pathname: str | None, search: str | None, sizes: tuple[int, ...]) -> Route:
    parts = [p for p in (pathname or "/").split("/") if p]
    view = parts[0] if parts and parts[0] in VIEWS else "overview"
    symbol = valid_symbol(parts[1].upper()) if view == "symbol" and len(parts) > 1 else None
    query = {key: values[-1] for key, values in parse_qs((search or "").lstrip("?")).items()}
    window = query.get("window", "")
    return Route(
        view=view, symbol=symbol,
        rule=query.get("rule") if query.get("rule") in queries.RULES else None,
        filter_symbol=valid_symbol(query.get("symbol")) if view == "anomalies" else None,
        range_key=query.get("range") if query.get("range") in queries.RANGES else DEFAULT_RANGE,
        anchor=query.get("anchor") if query.get("anchor") in ANCHORS else "latest",
        engine=query.get("engine") if query.get("engine") in queries.ENGINES else queries.ENGINES[0],
        window_seconds=int(window) if window.isdigit() and int(window) in sizes else None)


def to_url(route: Route, default_window: int) -> tuple[str, str]:
    """(pathname, search) for `route`; search is "" or starts with "?"."""
    path = "/" if route.view == "overview" else f"/{route.view}"
    if route.view == "symbol" and route.symbol:
        path += "/" + quote(route.symbol)
    query = {}
    if route.view == "anomalies":
        query.update(rule=route.rule, symbol=route.filter_symbol)
    defaults = Route()
    query.update(
        range=route.range_key if route.range_key != defaults.range_key else None,
        anchor=route.anchor if route.anchor != defaults.anchor else None,
        engine=route.engine if route.engine != defaults.engine else None,
        window=route.window_seconds if route.window_seconds not in (None, default_window) else None)
    query = {key: value for key, value in query.items() if value is not None}
    return path, ("?" + urlencode(query) if query else "")


def symbol_href(symbol: str, view_context, default_window: int) -> str:
    """The symbol view of `symbol` with the range, anchor, engine and window the page shows now."""
    route = Route(view="symbol", symbol=symbol, range_key=view_context.range_key, anchor=view_context.anchor,
                  engine=view_context.engine, window_seconds=view_context.window_seconds)
    return "".join(to_url(route, default_window))


def reconcile(from_url: Route, from_controls: Route, url_moved: bool, acted: set[str],
              first_symbol: str | None = None) -> tuple[Route, bool]:
    """What the page shows after one round of the routing callback, and whether its URL goes into the
    address bar.

    `url_moved`: the address changed by itself (page load, back/forward): the URL decides, except for the
    fields in `acted` that the user changed in the same round (a click during page load is not undone).
    Otherwise the controls decide. The URL is written only after a control change: rewriting the address
    after Back would make Back useless. (A click on a watchlist or anomaly row follows the row's link,
    symbol_href: the address moves and the URL decides.)"""
    route = from_controls
    if url_moved:
        route = replace(from_url, **{name: getattr(from_controls, name) for name in acted})
    if route.symbol is None:  # the URL's symbol if it named one, else the one selected, else the first
        route = replace(route, symbol=from_url.symbol or from_controls.symbol or first_symbol)
    return route, bool(acted or not url_moved)
