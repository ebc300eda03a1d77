"""Anomalies: every detection in the range, filterable by symbol and rule, as a timeline and a table (newest
first); a click on a row opens that symbol."""

from __future__ import annotations

import math
from functools import lru_cache

import pandas as pd
from dash import Input, Output, dcc, html, no_update

from dashboard import figures, queries, urls
from dashboard.context import ViewContext
from dashboard.db import DatabaseUnavailable
from dashboard.ui import control, empty, fmt_number, fmt_time, graph, testid

NAME, LABEL = "anomalies", "Anomalies"
ROWS = 200
TIMELINE_HEIGHT = 260
COLUMNS = ("Time (UTC)", "Symbol", "Rule", "Price", "Size", "Statistic", "Mean", "Stddev", "Trade")


def layout(_deps) -> html.Div:
    return html.Div(id="view-anomalies", className="view", **testid("view-anomalies"), children=[
        html.Div(className="panel", children=[
            html.Div(className="filters", children=[
                control("Symbol", dcc.Dropdown(id="anomaly-symbol-filter", options=[], value=None,
                                               placeholder="all symbols", className="dropdown"),
                        "filter-symbol"),
                control("Rule", dcc.Dropdown(
                    id="anomaly-rule-filter", value=None, placeholder="all rules", className="dropdown",
                    options=[{"label": r, "value": r} for r in queries.RULES]), "filter-rule"),
                html.Div(id="anomaly-count", className="note", **testid("anomaly-count")),
            ]),
            graph("anomaly-timeline-graph", TIMELINE_HEIGHT),
            html.Div(id="anomaly-table", className="scroll", **testid("anomaly-table")),
        ]),
    ])


def table(frame: pd.DataFrame, href=lambda symbol: f"/symbol/{symbol}"):
    """Newest first; `href(symbol)` is each row's link (its symbol view with the current range)."""
    if frame.empty:
        return empty("No anomalies match these filters in this range", "anomaly-empty")
    rows = []
    for r in frame.to_dict("records"):
        values = tuple(None if isinstance(v, float) and math.isnan(v) else v for v in map(r.get, ROW_FIELDS))
        rows.append(_row(values, href(r["symbol"])))
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in COLUMNS])), html.Tbody(rows)],
                      className="data-table")


ROW_FIELDS = ("event_time", "symbol", "rule", "price", "size", "z_score", "mean", "stddev", "trade_id")


# An anomaly row never changes once written, and every refresh lists mostly the rows of the one before:
# building 200 rows of Dash components took ~40 ms of CPU per render, so a row is built once per link.
@lru_cache(maxsize=4096)
def _row(values: tuple, link: str) -> html.Tr:
    event_time, symbol, rule, price, size, z_score, mean, stddev, trade_id = values
    return html.Tr(
        className="click-row", **{"data-testid": "anomaly-row", "data-symbol": symbol, "data-rule": rule},
        children=[html.Td(fmt_time(event_time)),
                  html.Td(dcc.Link(symbol, href=link, className="row-link"), className="sym"),
                  html.Td(rule, className=f"rule rule-{rule}"),
                  html.Td(fmt_number(price, 2), className="num"),
                  html.Td(fmt_number(size, 0), className="num"),
                  html.Td(fmt_number(z_score, 2), className="num"),
                  html.Td(fmt_number(mean, 2), className="num"),
                  html.Td(fmt_number(stddev, 4), className="num"),
                  html.Td(trade_id, className="muted mono")])


def count_text(total: int, shown: int) -> str:
    listed = f"newest {shown:,} shown" if total > shown else f"{shown:,} shown"
    return f"{total:,} in range · {listed} · click a row to open the symbol"


def unavailable() -> tuple:
    return (empty("Database unreachable", "anomaly-empty"),
            figures.empty_figure("Database unreachable", TIMELINE_HEIGHT), "Database unreachable")


def render(db, context: ViewContext, symbol: str | None, rule: str | None, default_window: int) -> tuple:
    if not context.db_ok:
        return unavailable()
    window = context.window
    try:
        frame = queries.anomalies(db, symbol=symbol, rule=rule, start=window.start, end=window.end,
                                  limit=ROWS)
        timeline, step = pd.DataFrame(), None
        if window.start is not None:
            step = queries.bucket_seconds(window.seconds, 1, points=60)
            timeline = queries.anomaly_timeline(db, window.start, window.end, step, symbol, rule)
    except DatabaseUnavailable:
        return unavailable()
    total = int(timeline["anomalies"].sum()) if not timeline.empty else len(frame)
    span = (window.start, window.end) if window.start is not None else None
    rows = table(frame, lambda symbol: urls.symbol_href(symbol, context, default_window))
    return rows, figures.anomaly_timeline_figure(timeline, step, span), count_text(total, len(frame))


def register(app, deps) -> None:
    @app.callback(
        Output("anomaly-table", "children"), Output("anomaly-timeline-graph", "figure"),
        Output("anomaly-count", "children"),
        Input("context", "data"), Input("anomaly-symbol-filter", "value"),
        Input("anomaly-rule-filter", "value"), Input("tabs", "value"))
    def render_anomalies(stored, symbol, rule, tab):
        context = ViewContext.from_store(stored)
        if tab != NAME or context is None:
            return no_update, no_update, no_update
        return render(deps.db, context, symbol, rule, deps.settings.windows.size_seconds)
