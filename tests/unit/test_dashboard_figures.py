"""dashboard.figures: pure DataFrame -> Figure functions, checked trace by trace on known frames."""

import math
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import pandas as pd
import plotly.graph_objects as go
import pytest

from dashboard import figures
from marketpulse.config import load_settings

T0 = datetime(2025, 3, 14, 14, 30, tzinfo=UTC)


def validated(build):
    """The figures are plain dicts: plotly's Figure loads each one here, checking every property (an
    unknown or ill-typed one raises), and the tests read it through plotly's attributes."""
    def wrapper(*args, **kwargs):
        return go.Figure(build(*args, **kwargs))
    return wrapper


candlestick_figure = validated(figures.candlestick_figure)
volume_share_figure = validated(figures.volume_share_figure)
top_movers_figure = validated(figures.top_movers_figure)
anomaly_timeline_figure = validated(figures.anomaly_timeline_figure)


def naive(value) -> datetime:
    """A time of a figure (naive UTC text, as plotly's own serialization writes it) as an aware datetime."""
    return pd.Timestamp(value).tz_localize(UTC).to_pydatetime()


def candles_frame(closes, opens=None, seconds=60):
    opens = opens or [closes[0]] + closes[:-1]
    return pd.DataFrame({
        "window_start": [T0 + timedelta(seconds=seconds * i) for i in range(len(closes))],
        "open": opens, "close": closes,
        "high": [max(o, c) + 0.5 for o, c in zip(opens, closes, strict=True)],
        "low": [min(o, c) - 0.5 for o, c in zip(opens, closes, strict=True)],
        "vwap": [(o + c) / 2 for o, c in zip(opens, closes, strict=True)],
        "volume": [100 * (i + 1) for i in range(len(closes))],
    })


def anomalies_frame(rows):
    return pd.DataFrame(rows, columns=["event_time", "rule", "price", "size", "z_score"])


def traces(fig, kind=None):
    return [t for t in fig.data if kind is None or t.type == kind]


def by_name(fig, name):
    [trace] = [t for t in fig.data if t.name == name]
    return trace


def test_candlestick_has_one_candle_per_window_with_vwap_volume_and_zscore_panels():
    candles = candles_frame([10.0, 11.0, 10.5, 12.0, 11.5])
    fig = candlestick_figure(candles, symbol="AAPL", window_seconds=60)
    [ohlc] = traces(fig, "candlestick")
    assert len(ohlc.x) == 5
    assert list(ohlc.close) == [10.0, 11.0, 10.5, 12.0, 11.5]
    assert list(ohlc.open) == [10.0, 10.0, 11.0, 10.5, 12.0]
    assert list(by_name(fig, "VWAP").y) == [10.0, 10.5, 10.75, 11.25, 11.75]
    volume = by_name(fig, "Volume")
    assert list(volume.y) == [100, 200, 300, 400, 500]
    # Up windows (close >= open) green, down windows red.
    assert list(volume.marker.color) == [figures.UP, figures.UP, figures.DOWN, figures.UP, figures.DOWN]
    # Three stacked panels sharing one time axis: price, volume, indicator.
    assert (ohlc.yaxis, volume.yaxis, by_name(fig, "z-score").yaxis) == ("y", "y2", "y3")
    assert fig.layout.yaxis.title.text == "price"
    assert fig.layout.yaxis2.title.text == "volume"
    assert fig.layout.yaxis3.title.text == "z"
    assert fig.layout.xaxis.matches == fig.layout.xaxis2.matches == "x3"  # one shared time axis
    assert fig.layout.xaxis.rangeslider.visible is False
    assert fig.layout.yaxis.domain[0] > fig.layout.yaxis2.domain[0] > fig.layout.yaxis3.domain[0]


def test_anomaly_markers_one_trace_per_rule_at_the_trade_price():
    candles = candles_frame([10.0, 11.0, 10.5])
    marks = anomalies_frame([
        (T0 + timedelta(seconds=10), "price_zscore", 10.9, 500, 6.1),
        (T0 + timedelta(seconds=70), "price_jump", 11.8, 20, 3.4),
        (T0 + timedelta(seconds=130), "price_zscore", 9.7, 700, -5.5),
    ])
    fig = candlestick_figure(candles, marks, symbol="AAPL")
    markers = [t for t in fig.data if t.name and t.name.startswith("Anomaly: ")]
    assert sorted(t.name for t in markers) == ["Anomaly: price_jump", "Anomaly: price_zscore"]
    assert sum(len(t.x) for t in markers) == 3
    zscore = by_name(fig, "Anomaly: price_zscore")
    assert list(zscore.y) == [10.9, 9.7]
    assert zscore.mode == "markers" and zscore.yaxis == "y"
    assert list(zscore.marker.symbol) == [figures.RULE_SYMBOLS["price_zscore"]] * 2
    assert [list(row) for row in by_name(fig, "Anomaly: price_jump").customdata] == [[20, 3.4, 11.8, ""]]
    assert fig.layout.yaxis.range is None  # nothing off scale: plotly's autorange


def test_a_fifty_percent_spike_does_not_flatten_the_chart_and_sits_on_its_edge():
    """50 calm candles around 100 and one window whose high is a +50 % trade: the axis fits the calm
    candles; the spike's marker is on the top edge, pointing up, with its real price in the hover."""
    closes = [100 + 0.1 * math.sin(i) for i in range(50)]
    candles = candles_frame(closes)
    candles.loc[30, "high"] = 150.0
    marks = anomalies_frame([(T0 + timedelta(seconds=30 * 60 + 5), "price_jump", 150.0, 40, 0.5),
                             (T0 + timedelta(seconds=10 * 60 + 5), "volume_zscore", 100.05, 9000, 7.0)])
    fig = candlestick_figure(candles, marks, symbol="AAPL")
    low, high = fig.layout.yaxis.range
    assert 98.5 < low < 99.5 and 100.5 < high < 101.5  # the calm candles' lows/highs (+-0.5) plus 5 %
    jump = by_name(fig, "Anomaly: price_jump")
    assert list(jump.y) == [high] and list(jump.marker.symbol) == ["triangle-up"]
    assert list(jump.customdata[0])[2:] == [150.0, " (off the chart's scale)"]
    assert "%{customdata[2]:.2f}%{customdata[3]}" in jump.hovertemplate
    volume = by_name(fig, "Anomaly: volume_zscore")  # inside the range: where it is, its own symbol
    assert list(volume.y) == [100.05]
    assert list(volume.marker.symbol) == [figures.RULE_SYMBOLS["volume_zscore"]]


def test_the_robust_range_keeps_modest_anomalies_in_view():
    """An anomaly 1 % above calm candles is inside the fence: the axis reaches it; a +50 % one is not."""
    candles = candles_frame([100.0] * 20 + [100.5] + [100.0] * 20)
    candles.loc[5, "high"] = 150.0
    low, high = figures.robust_price_range(candles, pd.Series([101.4, 150.0]))
    assert 101.4 < high < 101.6 and 99 < low < 99.5
    assert figures.robust_price_range(candles_frame([100.0, 101.0]), pd.Series([100.5])) is None


@pytest.mark.parametrize(("closes", "expected"), [
    ([100.0 + i for i in range(40)], None),            # a steady trend: all of it in view, autorange
    ([100.0] * 10, None),                              # flat: nothing outside
    ([100.0] * 20 + [60.0] + [100.0] * 20, "fenced"),  # a -40 % crash candle is fenced out
])
def test_the_robust_range_keeps_trends_and_fences_out_spikes(closes, expected):
    result = figures.robust_price_range(candles_frame(closes))
    if expected is None:
        assert result is None
    else:
        low, high = result
        assert 99 < low < 99.5 and 100.5 < high < 101


def test_sql_indicators_overlay_sma_and_bollinger_and_switch_the_bottom_panel_to_rsi():
    candles = candles_frame([10.0, 11.0, 10.5])
    indicators = pd.DataFrame({"window_start": candles["window_start"], "sma": [10.0, 10.5, 10.5],
                               "bb_upper": [11.0, 11.5, 11.6], "bb_lower": [9.0, 9.5, 9.4],
                               "rsi": [50.0, 60.0, 55.0]})
    fig = candlestick_figure(candles, indicators=indicators)
    names = [t.name for t in fig.data]
    assert {"SMA", "Bollinger upper", "Bollinger lower", "RSI"} <= set(names)
    assert "z-score" not in names
    assert list(by_name(fig, "RSI").y) == [50.0, 60.0, 55.0]
    assert by_name(fig, "RSI").yaxis == "y3" and by_name(fig, "SMA").yaxis == "y"
    assert fig.layout.yaxis3.title.text == "RSI"


def test_macd_and_volatility_panels_emas_and_the_hop_average_with_their_periods():
    candles = candles_frame([10.0, 11.0, 10.5, 10.8], seconds=10)
    starts = candles["window_start"]
    indicators = pd.DataFrame({"window_start": starts, "sma": [None, None, 10.5, 10.6],
                               "rsi": [None, 60, 55, 58],
                               "ewma": [10.0, 10.6, 10.55, 10.7], "ema_fast": [10.0, 10.5, 10.5, 10.6],
                               "ema_slow": [10.0, 10.4, 10.45, 10.5], "sma_long": [None] * 4,
                               "macd": [0.0, 0.1, 0.05, 0.1], "macd_signal": [0.0, 0.05, 0.05, 0.08],
                               "macd_histogram": [0.0, 0.05, 0.0, -0.02],
                               "volatility": [None, None, 0.001, 0.002]})
    averages = pd.DataFrame({"window_end": starts + timedelta(seconds=10), "window_seconds": 60,
                             "slide_seconds": 10, "avg_price": [10.0, 10.4, 10.5, 10.6]})
    periods = load_settings(environ={}).indicators
    fig = candlestick_figure(candles, indicators=indicators, averages=averages, periods=periods,
                                     rsi_levels=(25, 75), window_seconds=10)
    names = {t.name for t in fig.data}
    assert {"EWMA(10)", "EMA(12)", "EMA(26)", "SMA(20)", "HOP avg 60 s / 10 s", "RSI",
            "MACD(12, 26, 9)", "MACD signal", "MACD histogram", "volatility(20)"} <= names
    assert "SMA(50)" not in names  # all NULL while it warms up: no empty legend entry
    # Five panels: price, volume, RSI, MACD (line, signal, histogram bars), volatility.
    assert by_name(fig, "EWMA(10)").yaxis == by_name(fig, "HOP avg 60 s / 10 s").yaxis == "y"
    assert by_name(fig, "MACD(12, 26, 9)").yaxis == by_name(fig, "MACD histogram").yaxis == "y4"
    assert by_name(fig, "volatility(20)").yaxis == "y5"
    assert list(by_name(fig, "MACD histogram").marker.color) == [figures.UP] * 3 + [figures.DOWN]
    # A HOP window is drawn at the start of its last slide, where that slide's candle is.
    assert list(pd.to_datetime(by_name(fig, "HOP avg 60 s / 10 s").x, utc=True)) == list(starts)
    assert [shape.y0 for shape in fig.layout.shapes] == [25, 75]
    assert (fig.layout.yaxis4.title.text, fig.layout.yaxis5.title.text) == ("MACD", "vol")
    assert fig.layout.yaxis.domain[0] > fig.layout.yaxis4.domain[0] > fig.layout.yaxis5.domain[0]


def test_anomalous_windows_are_shaded_spans_with_a_marker_carrying_score_and_features():
    closes = [100.0 + 0.1 * i for i in range(10)]
    windows = pd.DataFrame({"window_start": [T0 + timedelta(minutes=3), T0 + timedelta(minutes=7)],
                            "window_end": [T0 + timedelta(minutes=4), T0 + timedelta(minutes=8)],
                            "score": [64.6, 31.0], "threshold": [30.0, 30.0],
                            "top_features": ["volume +6.05, imbalance +5.16, return +1.18",
                                             "imbalance -4.91, volume +3.39, return -0.83"]})
    fig = candlestick_figure(candles_frame(closes), window_anomalies=windows)
    spans = [shape for shape in fig.layout.shapes if shape.type == "rect"]
    # One span per window on the price and on the volume panel, over the window's own candle (drawn centred
    # on its start): the minute shifted back by half a 60 s bar.
    half = timedelta(seconds=30)
    assert [(naive(shape.x0), naive(shape.x1), shape.yref) for shape in spans] == [
        (T0 + timedelta(minutes=3) - half, T0 + timedelta(minutes=4) - half, "y domain"),
        (T0 + timedelta(minutes=3) - half, T0 + timedelta(minutes=4) - half, "y2 domain"),
        (T0 + timedelta(minutes=7) - half, T0 + timedelta(minutes=8) - half, "y domain"),
        (T0 + timedelta(minutes=7) - half, T0 + timedelta(minutes=8) - half, "y2 domain")]
    marker = by_name(fig, "Anomalous window (multivariate)")
    assert list(pd.to_datetime(marker.x, utc=True)) == [T0 + timedelta(minutes=3), T0 + timedelta(minutes=7)]
    # On the top of the price panel: the highest high (plotly's own range: no spike to fence out here).
    assert list(marker.y) == [max(closes) + 0.5] * 2
    assert [tuple(item) for item in marker.customdata] == [
        (64.6, 30.0, "volume +6.05, imbalance +5.16, return +1.18", "14:33", "14:34"),
        (31.0, 30.0, "imbalance -4.91, volume +3.39, return -0.83", "14:37", "14:38")]
    assert "score %{customdata[0]:.1f}" in marker.hovertemplate


def test_empty_candles_give_an_empty_chart_with_a_message():
    fig = candlestick_figure(pd.DataFrame(), symbol="MSFT", window_seconds=10)
    assert len(fig.data) == 0
    assert fig.layout.annotations[0].text == "No 10 s windows for MSFT in this range"


def test_rolling_zscore_against_the_previous_windows_only():
    z = figures.rolling_zscore(pd.Series([1.0, 2.0, 3.0, 4.0, 5.0, 100.0]), lookback=5)
    assert z[:5].isna().all()  # not warm yet (needs 5 previous values)
    assert z[5] == pytest.approx(97 / math.sqrt(2))  # mean 3, population stddev sqrt(2)
    flat = figures.rolling_zscore(pd.Series([2.0] * 7), lookback=5)
    assert flat.isna().all()  # no variation: undefined, not infinite


def test_volume_share_donut_sorted_by_volume():
    watch = pd.DataFrame({"symbol": ["AAPL", "MSFT", "TSLA"], "volume": [100, 300, 200]})
    fig = volume_share_figure(watch)
    [pie] = fig.data
    assert list(pie.labels) == ["MSFT", "TSLA", "AAPL"]
    assert list(pie.values) == [300, 200, 100]
    assert pie.hole == pytest.approx(0.58)
    assert fig.layout.annotations[0].text == "600<br>shares"


def test_top_movers_largest_absolute_changes_green_up_red_down():
    watch = pd.DataFrame({"symbol": ["A", "B", "C", "D"], "change_pct": [1.5, -3.0, 0.2, float("nan")]})
    fig = top_movers_figure(watch, n=2)
    [bar] = fig.data
    assert list(bar.y) == ["B", "A"]  # D has no change, C is not in the top 2
    assert list(bar.x) == [-3.0, 1.5]
    assert list(bar.marker.color) == [figures.DOWN, figures.UP]
    assert list(bar.text) == ["-3.00%", "+1.50%"]
    # the axis leaves 30 % of the span beyond each bar for its label outside it
    assert list(fig.layout.xaxis.range) == pytest.approx([-3.0 - 1.35, 1.5 + 1.35])
    assert top_movers_figure(watch.iloc[3:]).layout.annotations[0].text == \
        "No price changes in this range"


def test_anomaly_timeline_stacks_rules():
    timeline = pd.DataFrame({"bucket": [T0, T0, T0 + timedelta(minutes=1)],
                             "rule": ["price_zscore", "price_jump", "price_zscore"], "anomalies": [2, 1, 4]})
    fig = anomaly_timeline_figure(timeline)
    assert fig.layout.barmode == "stack"
    assert [t.name for t in fig.data] == ["price_jump", "price_zscore"]
    assert list(by_name(fig, "price_zscore").y) == [2, 4]
    span = (T0, T0 + timedelta(minutes=5))
    sized = anomaly_timeline_figure(timeline, step_seconds=60, x_range=span)
    assert by_name(sized, "price_jump").width == 54_000  # 90 % of a 60 s bucket, in ms
    assert pd.Timestamp(by_name(sized, "price_jump").x[0]) == pd.Timestamp("2025-03-14 14:30:30")  # UTC
    assert [naive(x) for x in sized.layout.xaxis.range] == [T0, T0 + timedelta(minutes=5)]
    assert anomaly_timeline_figure(pd.DataFrame()).layout.annotations[0].text == \
        "No anomalies in this range"


def test_sparkline_svg_scales_points_into_the_box_and_colours_by_direction():
    uri = figures.sparkline_svg([1.0, 3.0, 2.0], width=100, height=20)
    assert uri.startswith("data:image/svg+xml;utf8,")
    svg = unquote(uri.split(",", 1)[1])
    assert 'points="0.0,18.0 50.0,2.0 100.0,10.0"' in svg
    assert f'stroke="{figures.UP}"' in svg
    assert f'stroke="{figures.DOWN}"' in unquote(figures.sparkline_svg([3.0, 1.0]))
    assert "stroke-dasharray" in unquote(figures.sparkline_svg([5.0]))  # too few points: flat dashed line


@pytest.mark.parametrize(("value", "prefix", "text"), [
    (950, "", "950"), (1234, "", "1.23K"), (59_310, "", "59.31K"), (17_580_000, "$", "$17.58M"),
    (2.5e9, "", "2.50B"), (-1500, "", "-1.50K"), (12.345, "", "12.35"), (float("nan"), "", "—"),
])
def test_human_numbers(value, prefix, text):
    assert figures.human(value, prefix) == text


def forecast_frame(origin_index: int, points, half: float, seconds: int = 60, origin_close: float = 100.0):
    """The forecaster's rows of one origin for both models: ARIMA with +-half, the linear trend 1 higher."""
    origin = T0 + timedelta(seconds=seconds * origin_index)
    rows = []
    for model, shift in (("arima", 0.0), ("linear", 1.0)):
        for h, point in enumerate(points, start=1):
            rows.append({"model": model, "spec": "ARIMA(0,1,0)" if model == "arima" else "linear trend",
                         "bar_seconds": seconds, "origin_start": origin, "origin_close": origin_close,
                         "target_start": origin + timedelta(seconds=seconds * h), "horizon": h,
                         "point": point + shift, "lower": point + shift - half, "upper": point + shift + half,
                         "level": 0.95})
    return pd.DataFrame(rows)


def xs(trace) -> list:
    """A trace's x values as naive UTC timestamps (plotly keeps the clock time, not the zone)."""
    return [pd.Timestamp(x).replace(tzinfo=None) for x in trace.x]


def test_the_forecast_band_starts_at_the_last_candle_close_and_runs_ahead():
    candles = candles_frame([100.0 + 0.1 * i for i in range(20)])
    forecast = forecast_frame(19, [102.0, 102.1], half=0.5, origin_close=101.9)
    fig = candlestick_figure(candles, symbol="AAPL", forecast=forecast)
    upper, lower = by_name(fig, "ARIMA forecast ARIMA(0,1,0) upper"), by_name(fig, "95% interval")
    arima, linear = by_name(fig, "ARIMA forecast ARIMA(0,1,0)"), by_name(fig, "Linear trend forecast")
    last = T0.replace(tzinfo=None) + timedelta(minutes=19)
    expected_x = [last, last + timedelta(minutes=1), last + timedelta(minutes=2)]
    for trace in (upper, lower, arima, linear):
        assert xs(trace) == expected_x
    assert list(arima.y) == [101.9, 102.0, 102.1] and list(linear.y) == [101.9, 103.0, 103.1]
    assert list(upper.y) == [101.9, 102.5, 102.6] and list(lower.y) == [101.9, 101.5, 101.6]
    assert lower.fill == "tonexty" and linear.line.dash == "dash"


def test_a_one_minute_forecast_on_ten_second_candles_sits_on_the_candle_that_closes_each_minute():
    candles = candles_frame([100.0] * 12, seconds=10)
    forecast = forecast_frame(0, [100.0], half=0.1)
    fig = candlestick_figure(candles, symbol="AAPL", window_seconds=10, forecast=forecast)
    start = T0.replace(tzinfo=None)
    assert xs(by_name(fig, "ARIMA forecast ARIMA(0,1,0)")) == [start + timedelta(seconds=50),
                                                               start + timedelta(seconds=110)]


def test_the_price_axis_takes_in_a_modest_band_and_fences_out_a_wild_one():
    candles = candles_frame([100.0] * 20 + [100.5] + [100.0] * 20)
    candles.loc[5, "high"] = 150.0  # something outside the fence, so the axis is set explicitly
    modest = candlestick_figure(candles, forecast=forecast_frame(40, [100.2], half=1.2))
    assert modest.layout.yaxis.range[1] > 101.4  # the band's top, 100.2 + 1 + 1.2 (linear), inside
    wild = candlestick_figure(candles, forecast=forecast_frame(40, [100.0], half=60))
    assert wild.layout.yaxis.range[1] < 102  # a 60-wide band is cut at the edge, the candles stay readable
