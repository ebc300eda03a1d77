"""Market overview: totals for the range, the watchlist (click a row for the symbol view), each symbol's
share of volume and the top movers (the Flink SQL job's ranking when it has one for the range)."""

from __future__ import annotations

import pandas as pd
from dash import Input, Output, dcc, html, no_update

from dashboard import figures, queries, urls
from dashboard.context import ViewContext
from dashboard.db import DatabaseUnavailable
from dashboard.ui import card, empty, fmt_change, fmt_price, graph, testid

NAME, LABEL = "overview", "Market overview"
CARDS = (("trades", "Trades"), ("volume", "Volume"), ("notional", "Notional"),
         ("symbols", "Active symbols"), ("anomalies", "Anomalies"))
OUTPUTS = len(CARDS) + 3
MOVERS_TITLE = "Top movers (% change over range)"


def layout(_deps) -> html.Div:
    return html.Div(id="view-overview", className="view", **testid("view-overview"), children=[
        html.Div([card(key, label) for key, label in CARDS], className="cards"),
        html.Div(className="grid-2", children=[
            html.Div(className="panel", children=[
                html.Div([html.Span("Watchlist", className="panel-title"),
                          html.Span("click a row for the symbol view", className="panel-hint")],
                         className="panel-head"),
                html.Div(id="watchlist", **testid("watchlist")),
            ]),
            html.Div(className="panel stack", children=[
                graph("volume-share-graph", 300), graph("top-movers-graph", 300)]),
        ]),
    ])


def card_values(totals: dict) -> tuple[str, ...]:
    return (f"{totals['trades']:,}", figures.human(totals["volume"]), figures.human(totals["notional"], "$"),
            f"{totals['symbols']:,}", f"{totals['anomalies']:,}")


def empty_watchlist(message: str) -> html.Div:
    return empty(message, "watchlist-empty")


def watchlist_table(data: queries.Overview, href=lambda symbol: f"/symbol/{symbol}"):
    """One row per symbol; `href(symbol)` is the row's link (its symbol view with the current range)."""
    if data.watchlist.empty:
        return empty_watchlist("No windows in this range")
    head = html.Thead(html.Tr([html.Th(h) for h in (
        "Symbol", "Company", "Last", "% chg", "VWAP", "Volume", "Last hour", "Anomalies")]))
    rows = []
    for r in data.watchlist.itertuples():
        badge = (html.Span(f"{r.anomalies}", className="badge hot", **testid("anomaly-badge"))
                 if r.anomalies else html.Span("0", className="badge"))
        rows.append(html.Tr(
            className="click-row", **{"data-testid": "watch-row", "data-symbol": r.symbol},
            children=[
                html.Td(dcc.Link(r.symbol, href=href(r.symbol), className="row-link"), className="sym"),
                html.Td(r.company, className="company"),
                html.Td(fmt_price(r.last_close), className="num"),
                html.Td(fmt_change(r.change_pct), className="num"),
                html.Td(fmt_price(r.vwap), className="num"),
                html.Td(figures.human(r.volume), className="num"),
                html.Td(html.Img(src=figures.sparkline_svg(data.sparklines.get(r.symbol, [])),
                                 className="spark", alt=f"{r.symbol}, last hour")),
                html.Td(badge, className="num")]))
    return html.Table([head, html.Tbody(rows)], className="data-table", id="watchlist-table")


def movers(data: queries.Overview, sql_movers: pd.DataFrame, window_seconds: int) -> tuple[pd.DataFrame, str]:
    """The Flink SQL job's top movers of the range's last window when it wrote any, else the watchlist's."""
    if sql_movers.empty:
        return data.watchlist, MOVERS_TITLE
    ends = sql_movers["window_end"].iloc[0]
    return sql_movers, f"Top movers · Flink SQL, {window_seconds} s window ending {ends:%H:%M:%S}"


def unavailable() -> tuple:
    blank = figures.empty_figure("Database unreachable", 300)
    return (*("—",) * len(CARDS), empty_watchlist("Database unreachable"), blank, blank)


def render(db, context: ViewContext, default_window: int) -> tuple:
    if not context.db_ok:
        return unavailable()
    window = context.window
    try:
        data = queries.overview(db, context.engine, context.window_seconds, window)
    except DatabaseUnavailable:
        return unavailable()
    try:
        sql_movers = queries.sql_top_movers(db, context.window_seconds, window.start, window.end)
    except DatabaseUnavailable:
        sql_movers = pd.DataFrame()
    frame, title = movers(data, sql_movers, context.window_seconds)
    table = watchlist_table(data, lambda symbol: urls.symbol_href(symbol, context, default_window))
    return (*card_values(data.totals), table, figures.volume_share_figure(data.watchlist),
            figures.top_movers_figure(frame, title=title))


def register(app, deps) -> None:
    @app.callback(
        *[Output(f"card-{key}-value", "children") for key, _ in CARDS],
        Output("watchlist", "children"), Output("volume-share-graph", "figure"),
        Output("top-movers-graph", "figure"),
        Input("context", "data"), Input("tabs", "value"))
    def render_overview(stored, tab):
        context = ViewContext.from_store(stored)
        if tab != NAME or context is None:
            return (no_update,) * OUTPUTS
        return render(deps.db, context, deps.settings.windows.size_seconds)
