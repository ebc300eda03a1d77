"""Pure DataFrame -> figure functions for the dashboard (no database, no Dash).

A figure is a plain dict ({"data": [trace dicts], "layout": {...}}), as dcc.Graph takes it and plotly.js
draws it. Not plotly's Figure objects: they validate every property on every assignment, which cost a symbol
view ~60 ms of CPU per render (most of the server's time under 20 browsers). The unit tests load every
figure into plotly's Figure, so a property plotly does not know still fails there. Times go out as naive UTC
ISO strings, as plotly's own serialization of a UTC column does.

Every figure uses the same dark template; an empty frame gives an empty chart with a message in its
middle instead of an error, so a missing table or an empty range never breaks the page."""

from __future__ import annotations

import copy
import json
import math
from functools import lru_cache
from urllib.parse import quote

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.json import to_json_plotly
from plotly.subplots import make_subplots

from marketpulse.analytics.detector import PRICE_JUMP, PRICE_ZSCORE, VOLUME_ZSCORE
from marketpulse.analytics.forecasting import ARIMA, LINEAR, MODEL_LABELS

BG = "#0b0f14"
PANEL = "#111820"
GRID = "#1e2833"
TEXT = "#d6dee8"
MUTED = "#7d8b99"
UP = "#26a69a"
DOWN = "#ef5350"
ACCENT = "#4fa3ff"
VWAP = "#f5c542"
RULE_COLORS = {PRICE_ZSCORE: "#ff9f1c", PRICE_JUMP: "#e056fd", VOLUME_ZSCORE: "#00d2d3"}
RULE_SYMBOLS = {PRICE_ZSCORE: "triangle-down", PRICE_JUMP: "diamond", VOLUME_ZSCORE: "star"}
# The multivariate detector's anomalous windows: a shaded span over price and volume, a marker on top.
WINDOW_ANOMALY_COLOR = "#ff5e99"
SYMBOL_COLORS = ["#4fa3ff", "#f5c542", "#26a69a", "#ef5350", "#b388ff", "#ff9f1c", "#00d2d3",
                 "#e056fd", "#9ccc65", "#ff7eb6", "#8d9db6", "#ffd180"]
ZSCORE_LOOKBACK = 20
ZSCORE_MIN_PERIODS = 5
# The price axis spans the prices within this many interquartile ranges of the middle half: a trend stays
# in view whole, a 50 % spike does not flatten the chart (it is drawn at the edge instead).
PRICE_FENCE_IQRS = 3.0


def _template() -> dict:
    """plotly_dark with the dashboard's colours, fonts, margins, legend and axes, built (and validated) once
    with plotly, then inlined into every figure as JSON-ready data. Only the trace kinds the dashboard draws
    keep plotly_dark's trace defaults."""
    dark = pio.templates["plotly_dark"]
    template = go.layout.Template(layout=dark.layout,
                                  data={kind: dark.data[kind] for kind in ("scatter", "bar", "pie")})
    template.layout.update(
        paper_bgcolor=PANEL, plot_bgcolor=PANEL, hovermode="x unified",
        font={"family": "Inter, 'Segoe UI', Roboto, sans-serif", "color": TEXT, "size": 12},
        margin={"l": 56, "r": 16, "t": 36, "b": 32},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "xanchor": "right", "x": 1,
                "bgcolor": "rgba(0,0,0,0)"},
        hoverlabel={"bgcolor": "#1b2430", "bordercolor": GRID, "font": {"color": TEXT}})
    template.layout.xaxis.update(gridcolor=GRID, zerolinecolor=GRID, linecolor=GRID, showspikes=True,
                                 spikecolor=MUTED, spikethickness=1, spikedash="dot", spikemode="across")
    template.layout.yaxis.update(gridcolor=GRID, zerolinecolor=GRID, linecolor=GRID)
    return json.loads(to_json_plotly(template))


TEMPLATE = _template()


def _figure(data: list[dict], height: int, **layout) -> dict:
    return {"data": data, "layout": {"template": TEMPLATE, "height": height, **layout}}


def _times(values) -> list[str | None]:
    """Timestamps (aware or naive UTC) as naive UTC ISO strings; seconds, or milliseconds when any has
    them; None for a missing one."""
    stamps = pd.to_datetime(pd.Series(values), utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ms]")
    whole = (stamps.astype("int64") % 1000 == 0).all()
    text = np.datetime_as_string(stamps, unit="s" if whole else "ms").tolist()
    missing = np.isnat(stamps)
    return [None if gap else value for value, gap in zip(text, missing.tolist(), strict=True)] \
        if missing.any() else text


def _time(value) -> str:
    return _times([value])[0]


def _numbers(values) -> np.ndarray:
    """A column as floats (NaN: a gap), serialized by Dash as a numpy array."""
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)


def _annotation(text: str, size: int, color: str) -> dict:
    return {"text": text, "x": 0.5, "y": 0.5, "xref": "paper", "yref": "paper", "showarrow": False,
            "font": {"size": size, "color": color}}


def empty_figure(message: str = "No data", height: int = 320) -> dict:
    return _figure([], height, xaxis={"visible": False}, yaxis={"visible": False},
                   annotations=[_annotation(message, 15, MUTED)])


def rolling_zscore(values: pd.Series, lookback: int = ZSCORE_LOOKBACK) -> pd.Series:
    """z of each value against the mean/stddev of the (up to) `lookback` values before it; NaN for the
    first ZSCORE_MIN_PERIODS values and wherever those values do not vary."""
    values = pd.to_numeric(values, errors="coerce").reset_index(drop=True)
    prior = values.shift(1).rolling(lookback, min_periods=min(lookback, ZSCORE_MIN_PERIODS))
    std = prior.std(ddof=0)
    return ((values - prior.mean()) / std.where(std > 0)).astype(float)


def robust_price_range(candles: pd.DataFrame, marks: pd.Series | None = None) -> tuple[float, float] | None:
    """The candles' normal price range, padded by 5 %: every open, high, low and close within
    PRICE_FENCE_IQRS interquartile ranges of the middle half of them, and every mark (an anomaly's price, a
    forecast and its interval bounds) inside that fence too. None when nothing is outside it (plotly's own
    autorange is then right): a forecast band wider than the fence is cut at the edge, like a spike."""
    prices = pd.to_numeric(pd.concat([candles[c] for c in ("open", "high", "low", "close")]),
                           errors="coerce").dropna()
    if prices.empty:
        return None
    marks = pd.to_numeric(marks, errors="coerce").dropna() if marks is not None else pd.Series(dtype=float)
    q1, q3 = prices.quantile(0.25), prices.quantile(0.75)
    spread = (q3 - q1) or abs(q3) * 1e-3 or 1.0
    fence = (q1 - PRICE_FENCE_IQRS * spread, q3 + PRICE_FENCE_IQRS * spread)
    everything = pd.concat([prices, marks])
    kept = everything[everything.between(*fence)]
    if len(kept) == len(everything):
        return None
    low, high = kept.min(), kept.max()
    pad = (high - low) * 0.05 or abs(high) * 1e-3 or 1.0
    return float(low - pad), float(high + pad)


def _anomaly_traces(anomalies: pd.DataFrame, price_range: tuple[float, float] | None) -> list[dict]:
    """One marker trace per rule at the anomalous trade's price; a price off the axis is drawn at its
    edge (an arrow pointing out) with the real price in the hover text. Plain lists: a pandas groupby and
    masks per rule cost more than the rest of the figure."""
    times = _times(anomalies["event_time"])
    prices, sizes, stats = (_numbers(anomalies[c]).tolist() for c in ("price", "size", "z_score"))
    rows_of: dict[str, list[int]] = {}
    for i, rule in enumerate(anomalies["rule"].tolist()):
        rows_of.setdefault(rule, []).append(i)
    low, high = price_range if price_range is not None else (-math.inf, math.inf)
    traces = []
    for rule in sorted(rows_of):
        rows = rows_of[rule]
        ys, symbols, customdata = [], [], []
        for i in rows:
            price, y, symbol = prices[i], prices[i], RULE_SYMBOLS.get(rule, "x")
            if price > high:
                y, symbol = high, "triangle-up"
            elif price < low:
                y, symbol = low, "triangle-down"
            ys.append(y)
            symbols.append(symbol)
            customdata.append([sizes[i], stats[i], price, " (off the chart's scale)" if y != price else ""])
        traces.append({
            "type": "scatter", "x": [times[i] for i in rows], "y": ys, "mode": "markers",
            "name": f"Anomaly: {rule}", "cliponaxis": False,
            "marker": {"symbol": symbols, "size": 11, "color": RULE_COLORS.get(rule, "#ffffff"),
                       "line": {"color": BG, "width": 1}},
            "customdata": customdata,
            "hovertemplate": (f"{rule}<br>price %{{customdata[2]:.2f}}%{{customdata[3]}}"
                              "<br>size %{customdata[0]:,.0f}<br>stat %{customdata[1]:.2f}<extra></extra>")})
    return traces


def _axes(row: int) -> dict:
    """The axes of subplot `row` (1: the top), as make_subplots names them."""
    return {"xaxis": "x" if row == 1 else f"x{row}", "yaxis": "y" if row == 1 else f"y{row}"}


def _span(start: str, end: str, row: int) -> dict:
    """A shaded span from x `start` to `end` over the whole height of subplot `row` (as add_vrect)."""
    axis = "" if row == 1 else str(row)
    return {"type": "rect", "xref": f"x{axis}", "yref": f"y{axis} domain", "x0": start, "x1": end,
            "y0": 0, "y1": 1, "fillcolor": WINDOW_ANOMALY_COLOR, "opacity": 0.16, "line": {"width": 0},
            "layer": "below"}


def _level(y: float, row: int) -> dict:
    """A dotted horizontal line at `y` across subplot `row` (as add_hline)."""
    axis = "" if row == 1 else str(row)
    return {"type": "line", "xref": f"x{axis} domain", "yref": f"y{axis}", "x0": 0, "x1": 1, "y0": y, "y1": y,
            "line": {"color": MUTED, "width": 1, "dash": "dot"}}


def _window_anomaly_marks(windows: pd.DataFrame, top: float, bar_seconds: int) -> tuple[dict, list[dict]]:
    """Each anomalous window (the multivariate detector) as a shaded span over the price and volume panels
    and a square marker at `top` of the price axis, its score and top features in the hover: (the markers'
    trace, the spans). A candle is drawn centred on its window's start, so the span is shifted back by half a
    bar: it covers exactly the candles of the bars inside the window (one 60 s candle, or six 10 s ones)."""
    half_bar = pd.Timedelta(seconds=bar_seconds / 2)
    starts, ends = windows["window_start"] - half_bar, windows["window_end"] - half_bar
    spans = [_span(start, end, row) for start, end in zip(_times(starts), _times(ends), strict=True)
             for row in (1, 2)]
    middle = starts + (ends - starts) / 2
    trace = {
        "type": "scatter", **_axes(1), "x": _times(middle), "y": [top] * len(windows), "mode": "markers",
        "name": "Anomalous window (multivariate)", "cliponaxis": False,
        "marker": {"symbol": "square", "size": 10, "color": WINDOW_ANOMALY_COLOR,
                   "line": {"color": BG, "width": 1}},
        "customdata": [list(row) for row in zip(_numbers(windows["score"]).tolist(),
                                                _numbers(windows["threshold"]).tolist(),
                                                windows["top_features"].tolist(),
                                                windows["window_start"].dt.strftime("%H:%M").tolist(),
                                                windows["window_end"].dt.strftime("%H:%M").tolist(),
                                                strict=True)],
        "hovertemplate": ("multivariate window %{customdata[3]}-%{customdata[4]}<br>"
                          "score %{customdata[0]:.1f} (threshold %{customdata[1]:.4~g})<br>"
                          "%{customdata[2]}<extra></extra>")}
    return trace, spans


# Line colours of the SQL job's indicators (the Bollinger bands are grey dots, the MACD histogram bars).
INDICATOR_COLORS = {"sma": "#b388ff", "sma_long": "#ff7eb6", "ewma": "#9ccc65", "ema_fast": "#00d2d3",
                    "ema_slow": "#ff9f1c", "hop_avg": "#e0e0e0", "macd": ACCENT, "macd_signal": "#ff9f1c",
                    "volatility": "#ffd180"}


def indicator_labels(periods=None, hop: tuple[int, int] | None = None) -> dict[str, str]:
    """Legend names of the indicators, with their periods when known (`periods`: settings.indicators;
    `hop`: the sliding windows' (size, slide) in seconds)."""
    p = vars(periods) if periods is not None else {}

    def named(name: str, *keys: str) -> str:
        values = [p.get(key) for key in keys]
        if any(value is None for value in values):
            return name
        return f"{name}({', '.join(f'{value:g}' for value in values)})"

    return {"sma": named("SMA", "sma_bars"), "sma_long": named("SMA", "sma_long_bars"),
            "ewma": named("EWMA", "ewma_span"), "ema_fast": named("EMA", "ema_fast_span"),
            "ema_slow": named("EMA", "ema_slow_span"), "rsi": named("RSI", "rsi_changes"),
            "macd": named("MACD", "ema_fast_span", "ema_slow_span", "macd_signal_span"),
            "macd_signal": "MACD signal", "macd_histogram": "MACD histogram",
            "volatility": named("volatility", "volatility_returns"),
            "hop_avg": f"HOP avg {hop[0]} s / {hop[1]} s" if hop else "HOP avg",
            "hop_vwap": f"HOP VWAP {hop[0]} s / {hop[1]} s" if hop else "HOP VWAP"}


def _has(frame: pd.DataFrame | None, column: str) -> bool:
    return frame is not None and column in frame.columns and frame[column].notna().any()


def _has(frame: pd.DataFrame | None, column: str) -> bool:
    return frame is not None and column in frame.columns and frame[column].notna().any()


def _line(x, y, name: str, row: int, line: dict, **extra) -> dict:
    return {"type": "scatter", **_axes(row), "x": x, "y": _numbers(y), "name": name, "mode": "lines",
            "line": line, **extra}


def _price_overlays(ind: pd.DataFrame | None, averages: pd.DataFrame | None,
                    names: dict[str, str]) -> list[dict]:
    """Bollinger bands, SMAs and EMAs of the SQL job's bars, and its sliding (HOP) averages, on the price
    panel. A HOP window is drawn at the start of the last slide it covers (window_end - slide): where the
    candle and the bar indicators whose data it ends with are drawn."""
    traces = []
    x = _times(ind["window_start"]) if ind is not None else None
    if _has(ind, "bb_upper") and _has(ind, "bb_lower"):
        band = {"color": "#8d9db6", "width": 1, "dash": "dot"}
        traces.append(_line(x, ind["bb_upper"], "Bollinger upper", 1, band))
        traces.append(_line(x, ind["bb_lower"], "Bollinger lower", 1, band, fill="tonexty",
                            fillcolor="rgba(141,157,182,0.08)"))
    for column in ("sma", "sma_long", "ewma", "ema_fast", "ema_slow"):
        if _has(ind, column):
            traces.append(_line(x, ind[column], names[column], 1,
                                {"color": INDICATOR_COLORS[column], "width": 1.1}))
    if _has(averages, "avg_price"):
        hop_x = averages["window_end"] - pd.to_timedelta(averages["slide_seconds"], unit="s")
        traces.append(_line(_times(hop_x), averages["avg_price"], names["hop_avg"], 1,
                            {"color": INDICATOR_COLORS["hop_avg"], "width": 1, "dash": "dash"}))
    return traces


def _macd_panel(ind: pd.DataFrame, names: dict[str, str], row: int) -> list[dict]:
    x, histogram = _times(ind["window_start"]), _numbers(ind["macd_histogram"])
    traces = [{"type": "bar", **_axes(row), "x": x, "y": histogram, "name": names["macd_histogram"],
               "showlegend": False, "opacity": 0.7,
               "marker": {"color": [DOWN if v < 0 else UP for v in histogram.tolist()]}}]
    for column in ("macd", "macd_signal"):
        traces.append(_line(x, ind[column], names[column], row,
                            {"color": INDICATOR_COLORS[column], "width": 1.2}, showlegend=False))
    return traces


# The forecaster's models: ARIMA's interval is the shaded band, the linear baseline a dashed line with its
# interval in the hover.
FORECAST_COLORS = {ARIMA: "#ffb74d", LINEAR: "#b0bec5"}
FORECAST_BAND = "rgba(255,183,77,0.18)"


def forecast_x(frame: pd.DataFrame, column: str, window_seconds: int) -> pd.Series:
    """Where a forecast bar's close goes on a chart of `window_seconds` candles: on the candle that closes
    with it (the bar's last window of this size), since a candle is drawn at its start."""
    return frame[column] + pd.to_timedelta(frame["bar_seconds"] - window_seconds, unit="s")


def _forecast_traces(forecast: pd.DataFrame, window_seconds: int) -> list[dict]:
    """Each model's point forecast from the origin bar's close on, and ARIMA's interval as a band (the
    origin is its zero-width start: the close is known there)."""
    traces = []
    for model in (ARIMA, LINEAR):
        rows = forecast[forecast["model"] == model]
        if rows.empty:
            continue
        origin = rows.iloc[[0]]
        x = _times(pd.concat([forecast_x(origin, "origin_start", window_seconds),
                              forecast_x(rows, "target_start", window_seconds)]))
        point = pd.concat([origin["origin_close"], rows["point"]])
        lower = _numbers(pd.concat([origin["origin_close"], rows["lower"]]))
        upper = _numbers(pd.concat([origin["origin_close"], rows["upper"]]))
        level = f"{rows['level'].iloc[0]:.0%}"
        name = f"{MODEL_LABELS[model]} forecast" + (f" {rows['spec'].iloc[0]}" if model == ARIMA else "")
        if model == ARIMA:
            traces.append(_line(x, upper, f"{name} upper", 1, {"width": 0}, hoverinfo="skip",
                                showlegend=False))
            traces.append(_line(x, lower, f"{level} interval", 1, {"width": 0}, fill="tonexty",
                                fillcolor=FORECAST_BAND, hoverinfo="skip"))
        traces.append(_line(
            x, point, name, 1, {"color": FORECAST_COLORS[model], "width": 1.6,
                                "dash": "solid" if model == ARIMA else "dash"},
            mode="lines+markers", marker={"size": 4},
            customdata=[list(pair) for pair in zip(lower.tolist(), upper.tolist(), strict=True)],
            hovertemplate=(f"{MODEL_LABELS[model]} %{{y:.2f}} [%{{customdata[0]:.2f}}, "
                           f"%{{customdata[1]:.2f}}] {level}<extra></extra>")))
    return traces


@lru_cache(maxsize=64)
def _panels(titles: tuple[str | None, ...], heights: tuple[float, ...]) -> dict:
    """The axes (domains, one shared time axis) and subplot titles of stacked panels, as make_subplots lays
    them out: computed by plotly once per shape, copied for each figure."""
    grid = make_subplots(rows=len(titles), cols=1, shared_xaxes=True, vertical_spacing=0.035,
                         row_heights=list(heights), subplot_titles=list(titles))
    layout = json.loads(to_json_plotly(grid.layout))
    layout.pop("template", None)
    for annotation in layout.get("annotations", []):
        annotation["font"] = {"size": 11, "color": MUTED}
    return layout


def candlestick_figure(candles: pd.DataFrame, anomalies: pd.DataFrame | None = None, *, symbol: str = "",
                       window_seconds: int = 60, indicators: pd.DataFrame | None = None,
                       averages: pd.DataFrame | None = None, periods=None,
                       rsi_levels: tuple[float, float] = (30, 70), forecast: pd.DataFrame | None = None,
                       height: int = 640, window_anomalies: pd.DataFrame | None = None) -> dict:
    """Price (OHLC candles + VWAP + anomaly markers [+ SQL overlays]), volume, and indicator panels.

    `candles`: window_start, open, high, low, close, vwap, volume (one row per window).
    `anomalies`: event_time, rule, price, size, z_score (markers at the anomalous trade's price).
    `indicators`: window_start plus any of sma, bb_upper, bb_lower, sma_long, ewma, ema_fast, ema_slow, rsi,
    macd, macd_signal, macd_histogram, volatility (the Flink SQL job's bars of this window size): the
    bottom panels are then RSI (with `rsi_levels` dotted), MACD when present, volatility when present;
    without it the bottom panel is the close's rolling z-score, computed here.
    `averages`: the SQL job's sliding windows (window_end, slide_seconds, avg_price), a line on the price.
    `periods` (settings.indicators) puts the periods in the legend.
    `forecast`: the forecaster's newest forecast (model, spec, bar_seconds, origin_start, origin_close,
    target_start, point, lower, upper, level), drawn ahead of its origin candle (`forecast_x`).
    `window_anomalies`: window_start, window_end, score, threshold, top_features (the multivariate detector's
    anomalous windows): shaded spans and a marker on the top edge of the price axis."""
    if candles is None or candles.empty:
        return empty_figure(f"No {window_seconds} s windows for {symbol or 'this symbol'} in this range",
                            height)
    candles = candles.sort_values("window_start")
    x = _times(candles["window_start"])
    ind = indicators.sort_values("window_start") if indicators is not None and not indicators.empty else None
    averages = averages if averages is not None and not averages.empty else None
    hop = None if averages is None else (int(averages["window_seconds"].iloc[0]),
                                         int(averages["slide_seconds"].iloc[0]))
    names = indicator_labels(periods, hop)
    has_rsi, has_macd, has_volatility = _has(ind, "rsi"), _has(ind, "macd"), _has(ind, "volatility")
    bottom_title = f"{names['rsi']} (Flink SQL)" if has_rsi else \
        f"z-score of close vs previous {ZSCORE_LOOKBACK} windows"
    titles = [None, None, bottom_title]
    if has_macd:
        titles.append(f"{names['macd']}: line, signal, histogram (Flink SQL)")
    if has_volatility:
        titles.append(f"{names['volatility']}: stddev of log returns per bar (Flink SQL)")
    extra = len(titles) - 3
    heights = [0.62 - 0.1 * extra, 0.19 - 0.035 * extra, 0.19 - 0.035 * extra] + [0.17] * extra
    layout = copy.deepcopy(_panels(tuple(titles), tuple(heights)))
    opens, closes = _numbers(candles["open"]), _numbers(candles["close"])
    data = [{"type": "candlestick", **_axes(1), "x": x, "open": opens, "high": _numbers(candles["high"]),
             "low": _numbers(candles["low"]), "close": closes, "name": "OHLC",
             "increasing": {"line": {"color": UP}, "fillcolor": UP},
             "decreasing": {"line": {"color": DOWN}, "fillcolor": DOWN}},
            _line(x, candles["vwap"], "VWAP", 1, {"color": VWAP, "width": 1.4})]
    data += _price_overlays(ind, averages, names)
    has_anomalies = anomalies is not None and not anomalies.empty
    has_forecast = forecast is not None and not forecast.empty
    if has_forecast:
        data += _forecast_traces(forecast, window_seconds)
    marks = pd.concat([anomalies["price"] if has_anomalies else pd.Series(dtype=float),
                       *((forecast[c] for c in ("point", "lower", "upper")) if has_forecast else ())])
    price_range = robust_price_range(candles, marks if len(marks) else None)
    if has_anomalies:
        data += [dict(trace, **_axes(1)) for trace in _anomaly_traces(anomalies, price_range)]
    colors = [UP if c >= o else DOWN for o, c in zip(opens.tolist(), closes.tolist(), strict=True)]
    data.append({"type": "bar", **_axes(2), "x": x, "y": _numbers(candles["volume"]), "name": "Volume",
                 "marker": {"color": colors}, "opacity": 0.8, "showlegend": False})
    shapes = []
    if window_anomalies is not None and not window_anomalies.empty:
        top = price_range[1] if price_range is not None else float(candles["high"].max())
        trace, spans = _window_anomaly_marks(window_anomalies, top, window_seconds)
        data.append(trace)
        shapes += spans
    bottom_line = {"color": ACCENT, "width": 1.3}
    if has_rsi:
        data.append(_line(_times(ind["window_start"]), ind["rsi"], "RSI", 3, bottom_line, showlegend=False))
        shapes += [_level(level, 3) for level in rsi_levels]
    else:
        data.append(_line(x, rolling_zscore(candles["close"]), "z-score", 3, bottom_line, showlegend=False))
        shapes += [_level(level, 3) for level in (-2, 2)]
    layout["yaxis"]["title"] = {"text": "price"}
    if price_range is not None:  # a spike's wick runs off the top/bottom; its marker sits on the edge
        layout["yaxis"]["range"] = list(price_range)
    layout["yaxis2"]["title"] = {"text": "volume"}
    layout["yaxis3"]["title"] = {"text": "RSI" if has_rsi else "z"}
    row = 4
    if has_macd:
        data += _macd_panel(ind, names, row)
        layout[f"yaxis{row}"]["title"] = {"text": "MACD"}
        row += 1
    if has_volatility:
        data.append(_line(_times(ind["window_start"]), ind["volatility"], names["volatility"], row,
                          {"color": INDICATOR_COLORS["volatility"], "width": 1.2}, showlegend=False))
        layout[f"yaxis{row}"].update(title={"text": "vol"}, tickformat=".2~p")  # 2 significant digits, in %
    layout["xaxis"]["rangeslider"] = {"visible": False}
    return _figure(data, height, **layout, bargap=0.1, margin={"t": 30}, legend={"xanchor": "left", "x": 0},
                   shapes=shapes)


def volume_share_figure(watchlist: pd.DataFrame, height: int = 300) -> dict:
    """Each symbol's share of the traded volume in the range (donut)."""
    if watchlist is None or watchlist.empty or pd.to_numeric(watchlist["volume"]).sum() <= 0:
        return empty_figure("No volume in this range", height)
    data = watchlist.sort_values("volume", ascending=False)
    volume = _numbers(data["volume"])
    pie = {"type": "pie", "labels": data["symbol"].tolist(), "values": volume, "hole": 0.58, "sort": False,
           "marker": {"colors": (SYMBOL_COLORS * (1 + len(data) // len(SYMBOL_COLORS)))[: len(data)],
                      "line": {"color": PANEL, "width": 2}},
           "textinfo": "label+percent", "textposition": "inside", "insidetextorientation": "horizontal",
           "hovertemplate": "%{label}<br>%{value:,.0f} shares<br>%{percent}<extra></extra>"}
    return _figure([pie], height, showlegend=False,
                   title={"text": "Volume share", "x": 0.02, "font": {"size": 13}},
                   margin={"l": 10, "r": 10, "t": 36, "b": 10},
                   annotations=[_annotation(f"{human(volume.sum())}<br>shares", 14, TEXT)])


def top_movers_figure(watchlist: pd.DataFrame, n: int = 10, height: int = 300,
                      title: str = "Top movers (% change over range)") -> dict:
    """The symbols with the largest absolute % change (`change_pct`), gainers green, losers red."""
    if watchlist is None or watchlist.empty or watchlist["change_pct"].dropna().empty:
        return empty_figure("No price changes in this range", height)
    data = watchlist.dropna(subset=["change_pct"]).copy()
    data["abs"] = data["change_pct"].abs()
    data = data.nlargest(n, "abs").sort_values("change_pct")
    change = _numbers(data["change_pct"]).tolist()
    bar = {"type": "bar", "x": change, "y": data["symbol"].tolist(), "orientation": "h", "name": "% change",
           "marker": {"color": [UP if v >= 0 else DOWN for v in change]},
           "text": [f"{v:+.2f}%" for v in change], "textposition": "outside", "cliponaxis": False,
           "hovertemplate": "%{y}: %{x:+.3f}%<extra></extra>"}
    # Room for the labels outside the bars: Plotly's autorange ignores them, and a loser's label would
    # otherwise sit on top of the symbol names.
    low, high = min(0.0, min(change)), max(0.0, max(change))
    pad = 0.3 * ((high - low) or 1.0)
    return _figure([bar], height, showlegend=False, hovermode="closest",
                   title={"text": title, "x": 0.02, "font": {"size": 13}},
                   margin={"l": 60, "r": 40, "t": 36, "b": 28},
                   xaxis={"ticksuffix": "%", "zeroline": True, "zerolinecolor": MUTED, "showspikes": False,
                          "range": [low - pad if low < 0 else 0.0, high + pad if high > 0 else 0.0]},
                   yaxis={"showspikes": False})


def anomaly_timeline_figure(timeline: pd.DataFrame, step_seconds: int | None = None, x_range=None,
                            height: int = 260) -> dict:
    """Anomaly counts per time bucket (`bucket` = bucket start), stacked by rule; with `step_seconds`
    each bar spans its bucket, and `x_range` pins the axis to the selected range."""
    if timeline is None or timeline.empty:
        return empty_figure("No anomalies in this range", height)
    bars = []
    for rule, group in timeline.groupby("rule", sort=True):
        x = pd.to_datetime(group["bucket"], utc=True)
        extra = {}
        if step_seconds:
            x = x + pd.Timedelta(seconds=step_seconds / 2)
            extra["width"] = step_seconds * 1000 * 0.9
        bars.append({"type": "bar", "x": _times(x), "y": _numbers(group["anomalies"]), "name": rule,
                     "marker": {"color": RULE_COLORS.get(rule, ACCENT)}, **extra})
    xaxis = {"range": [_time(x_range[0]), _time(x_range[1])]} if x_range is not None else {}
    return _figure(bars, height, barmode="stack", hovermode="x unified",
                   margin={"l": 56, "r": 16, "t": 36, "b": 44},
                   title={"text": "Anomalies over time", "x": 0.01, "font": {"size": 13}},
                   xaxis=xaxis, yaxis={"title": {"text": "count"}, "rangemode": "tozero"})


def sparkline_svg(values: list[float], width: int = 110, height: int = 28) -> str:
    """A tiny line chart as an SVG data URI (for an <img> in the watchlist); green if it ends higher."""
    points = [v for v in values if v is not None and not math.isnan(v)]
    if len(points) < 2:
        body = (f'<line x1="0" y1="{height / 2}" x2="{width}" y2="{height / 2}" stroke="{MUTED}" '
                'stroke-width="1" stroke-dasharray="2,3"/>')
    else:
        low, high = min(points), max(points)
        spread = (high - low) or 1.0
        step = width / (len(points) - 1)
        coords = " ".join(f"{i * step:.1f},{height - 2 - (v - low) / spread * (height - 4):.1f}"
                          for i, v in enumerate(points))
        color = UP if points[-1] >= points[0] else DOWN
        body = (f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5" '
                'stroke-linejoin="round" stroke-linecap="round"/>')
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{body}</svg>'
    return "data:image/svg+xml;utf8," + quote(svg)


def human(value: float, prefix: str = "") -> str:
    """1234567 -> '1.23M' (K, M, B, T); small values keep their digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    sign = "-" if value < 0 else ""
    value = abs(float(value))
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            return f"{sign}{prefix}{value / size:.2f}{unit}"
    digits = 0 if value >= 100 or value == int(value) else 2
    return f"{sign}{prefix}{value:,.{digits}f}"
