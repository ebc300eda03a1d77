"""One symbol: candlesticks for the range with its anomalies and the multivariate detector's anomalous
windows marked, volume, and indicators: the Flink SQL
job's bar indicators where it writes them for this window size (SMAs, Bollinger bands and EMAs on the price,
then RSI, MACD and volatility panels), else a z-score of the candles shown; and its sliding (HOP) average on
the price at every window size."""

from __future__ import annotations

import pandas as pd
from dash import Input, Output, html, no_update

from dashboard import figures, queries
from dashboard.context import ViewContext
from dashboard.db import DatabaseUnavailable
from dashboard.ui import engine_label, fmt_change, fmt_price, graph, testid

NAME, LABEL = "symbol", "Symbol"
# Five stacked panels with the SQL job's indicators (price, volume, RSI, MACD, volatility): tall enough that
# each bottom panel keeps ~140 px.
HEIGHT = 940


def layout(_deps) -> html.Div:
    return html.Div(id="view-symbol", className="view", **testid("view-symbol"), children=[
        html.Div(className="panel", children=[
            html.Div(id="symbol-header", className="symbol-header", **testid("symbol-header")),
            html.Div(id="symbol-note", className="note", **testid("symbol-note")),
            graph("candles-graph", HEIGHT),
        ]),
    ])


def header(symbol: str, frame: pd.DataFrame) -> list:
    """Symbol, last close, change over the range, VWAP, high and low of the candles shown."""
    parts = [html.Span(symbol, className="sym-big", **testid("symbol-title"))]
    if frame.empty:
        return parts
    last, first, volume = frame["close"].iloc[-1], frame["open"].iloc[0], frame["volume"].sum()
    return parts + [
        html.Span(fmt_price(last), className="price-big"),
        fmt_change((last / first - 1) * 100 if first else None),
        html.Span(f"VWAP {fmt_price(frame['notional'].sum() / volume)}" if volume else "", className="muted"),
        html.Span(f"H {fmt_price(frame['high'].max())} · L {fmt_price(frame['low'].min())}",
                  className="muted")]


def note(candles: int, anomalies: int, engine: str, seconds: int, truncated: bool,
         sql_indicators: bool, anomalous_windows: int = 0) -> list:
    lines = []
    if truncated:
        lines.append(f"Showing the latest {queries.MAX_CANDLES:,} windows of this range; pick a shorter "
                     "range or larger windows to see all of it. ")
    source = ("SMAs, Bollinger bands, EMAs, RSI, MACD and volatility from the Flink SQL job's indicators "
              "table" if sql_indicators
              else "bottom panel: z-score computed by the dashboard from the candles shown (no Flink SQL "
                   f"indicators for {seconds} s bars)")
    lines.append(f"{candles:,} candles · {anomalies:,} anomalies · {anomalous_windows:,} anomalous windows "
                 f"(multivariate) · engine {engine_label(engine)} · {source}")
    return lines


def render(db, context: ViewContext, symbol: str | None, settings) -> tuple:
    if not context.db_ok:
        return figures.empty_figure("Database unreachable", HEIGHT), symbol or "", ""
    if not symbol:
        return figures.empty_figure("No symbols yet", HEIGHT), "", ""
    window, engine, seconds = context.window, context.engine, context.window_seconds
    try:
        frame, truncated = queries.candles(db, engine, seconds, symbol, window.start, window.end)
        marks, bands, averages, spans = pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
        if not frame.empty:
            first = frame["window_start"].iloc[0].to_pydatetime()
            marks = queries.anomalies(db, symbol=symbol, start=first, end=window.end, limit=5000)
            spans = queries.window_anomalies(db, symbol, first, window.end)
            bands = queries.indicators(db, symbol, seconds, first, window.end)
            averages = queries.moving_averages(db, symbol, settings.windows.size_seconds,
                                               settings.windows.short_size_seconds, first, window.end)
    except DatabaseUnavailable:
        return figures.empty_figure("Database unreachable", HEIGHT), symbol, ""
    fig = figures.candlestick_figure(
        frame, marks, symbol=symbol, window_seconds=seconds, indicators=bands if not bands.empty else None,
        averages=averages, periods=settings.indicators, height=HEIGHT - 20,
        rsi_levels=(settings.indicators.rsi_oversold, settings.indicators.rsi_overbought),
        window_anomalies=spans)
    return (fig, header(symbol, frame),
            note(len(frame), len(marks), engine, seconds, truncated, sql_indicators=not bands.empty,
                 anomalous_windows=len(spans)))


def register(app, deps) -> None:
    @app.callback(
        Output("candles-graph", "figure"), Output("symbol-header", "children"),
        Output("symbol-note", "children"),
        Input("context", "data"), Input("symbol-select", "value"), Input("tabs", "value"))
    def render_symbol(stored, symbol, tab):
        context = ViewContext.from_store(stored)
        if tab != NAME or context is None:
            return no_update, no_update, no_update
        return render(deps.db, context, symbol, deps.settings)
