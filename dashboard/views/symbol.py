"""One symbol: candlesticks for the range with its anomalies and the multivariate detector's anomalous
windows marked, volume, and indicators: the Flink SQL
job's bar indicators where it writes them for this window size (SMAs, Bollinger bands and EMAs on the price,
then RSI, MACD and volatility panels), else a z-score of the candles shown; its sliding (HOP) average on
the price at every window size; and the forecaster's newest forecast ahead of the last candle (ARIMA's band
and point, the linear baseline) with their errors so far beside the chart, on every window size that divides
the forecast's bars."""

from __future__ import annotations

import pandas as pd
from dash import Input, Output, html, no_update

from dashboard import figures, queries
from dashboard.context import ViewContext
from dashboard.db import DatabaseUnavailable
from dashboard.ui import engine_label, fmt_change, fmt_price, fmt_time, graph, testid
from marketpulse.analytics.forecasting import MODEL_LABELS

NAME, LABEL = "symbol", "Symbol"
# Five stacked panels with the SQL job's indicators (price, volume, RSI, MACD, volatility): tall enough that
# each bottom panel keeps ~140 px.
HEIGHT = 940


def layout(_deps) -> html.Div:
    return html.Div(id="view-symbol", className="view", **testid("view-symbol"), children=[
        html.Div(className="panel", children=[
            html.Div(id="symbol-header", className="symbol-header", **testid("symbol-header")),
            html.Div(id="symbol-forecast", className="note", **testid("symbol-forecast")),
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


def forecast_summary(forecast: pd.DataFrame, errors: pd.DataFrame) -> list:
    """What the band is, and each model's errors so far (MAPE, MAE, share of actuals in the interval):
    the line beside the chart. Empty without a forecast in view."""
    if forecast.empty:
        return []
    first = forecast.iloc[0]
    horizon, bar = int(forecast["horizon"].max()), int(first["bar_seconds"])
    origin = fmt_time(first["origin_start"].to_pydatetime())
    parts = [html.Span(f"Forecast of the next {horizon} closes of {bar} s bars from the bar of {origin} UTC, "
                       f"{first['level']:.0%} interval (shaded: ARIMA). Error so far: ")]
    for row in errors.itertuples():
        label = MODEL_LABELS.get(row.model, row.model)  # no order: the errors span fits of several
        if not row.forecasts:
            parts.append(html.Span(f"{label}: none reached its bar yet. ", **testid(f"forecast-{row.model}")))
            continue
        parts.append(html.Span(
            f"{label}: MAPE {row.mape:.3f} %, MAE {row.mae:.3f}, {row.coverage:.0%} in the interval "
            f"({row.forecasts:,} forecasts). ", **testid(f"forecast-{row.model}")))
    if errors.empty:
        parts.append(html.Span("no forecast has reached its bar yet."))
    return parts


def render(db, context: ViewContext, symbol: str | None, settings) -> tuple:
    if not context.db_ok:
        return figures.empty_figure("Database unreachable", HEIGHT), symbol or "", "", []
    if not symbol:
        return figures.empty_figure("No symbols yet", HEIGHT), "", "", []
    window, engine, seconds = context.window, context.engine, context.window_seconds
    try:
        frame, truncated = queries.candles(db, engine, seconds, symbol, window.start, window.end)
        marks, bands, averages, spans = pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
        forecast, errors = pd.DataFrame(), pd.DataFrame()
        bar_seconds = settings.windows.size_seconds  # the forecaster's bars (forecaster/config.py)
        if not frame.empty and bar_seconds % seconds == 0:
            shown = frame["window_start"]
            forecast = queries.forecast(db, symbol, bar_seconds, shown.iloc[0].to_pydatetime(),
                                        shown.iloc[-1].to_pydatetime())
            errors = queries.forecast_errors(db, symbol, bar_seconds) if not forecast.empty else errors
        if not frame.empty:
            first = frame["window_start"].iloc[0].to_pydatetime()
            marks = queries.anomalies(db, symbol=symbol, start=first, end=window.end, limit=5000)
            spans = queries.window_anomalies(db, symbol, first, window.end)
            bands = queries.indicators(db, symbol, seconds, first, window.end)
            averages = queries.moving_averages(db, symbol, settings.windows.size_seconds,
                                               settings.windows.short_size_seconds, first, window.end)
    except DatabaseUnavailable:
        return figures.empty_figure("Database unreachable", HEIGHT), symbol, "", []
    fig = figures.candlestick_figure(
        frame, marks, symbol=symbol, window_seconds=seconds, indicators=bands if not bands.empty else None,
        averages=averages, periods=settings.indicators, height=HEIGHT - 20,
        rsi_levels=(settings.indicators.rsi_oversold, settings.indicators.rsi_overbought), forecast=forecast,
        window_anomalies=spans)
    return (fig, header(symbol, frame),
            note(len(frame), len(marks), engine, seconds, truncated, sql_indicators=not bands.empty,
                 anomalous_windows=len(spans)),
            forecast_summary(forecast, errors))


def register(app, deps) -> None:
    @app.callback(
        Output("candles-graph", "figure"), Output("symbol-header", "children"),
        Output("symbol-note", "children"), Output("symbol-forecast", "children"),
        Input("context", "data"), Input("symbol-select", "value"), Input("tabs", "value"))
    def render_symbol(stored, symbol, tab):
        context = ViewContext.from_store(stored)
        if tab != NAME or context is None:
            return no_update, no_update, no_update, no_update
        return render(deps.db, context, symbol, deps.settings)
