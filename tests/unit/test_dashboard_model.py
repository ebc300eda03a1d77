"""The dashboard's pure helpers: time-range resolution, bucket widths, the overview summary and the
API's parameter parsing (no database)."""

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from dashboard import api, queries

LATEST = datetime(2025, 3, 14, 15, 0, tzinfo=UTC)
EARLIEST = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("key", "start"), [
    ("5m", LATEST - timedelta(minutes=5)), ("15m", LATEST - timedelta(minutes=15)),
    ("1h", LATEST - timedelta(hours=1)), ("1d", LATEST - timedelta(days=1)), ("all", EARLIEST)])
def test_ranges_relative_to_the_latest_data(key, start):
    window = queries.resolve_window(key, "latest", EARLIEST, LATEST, NOW)
    assert (window.start, window.end) == (start, LATEST)


def test_ranges_relative_to_now():
    window = queries.resolve_window("15m", "now", EARLIEST, LATEST, NOW)
    assert (window.start, window.end) == (NOW - timedelta(minutes=15), NOW)
    assert queries.resolve_window("all", "now", EARLIEST, LATEST, NOW).start == EARLIEST


def test_no_data_means_no_range_rather_than_a_guess():
    window = queries.resolve_window("15m", "latest", None, None, NOW)
    assert (window.start, window.end, window.seconds) == (None, None, None)


def test_bad_range_or_anchor_is_rejected():
    with pytest.raises(ValueError, match="unknown range"):
        queries.resolve_window("2w", "latest", EARLIEST, LATEST, NOW)
    with pytest.raises(ValueError, match="unknown anchor"):
        queries.resolve_window("5m", "yesterday", EARLIEST, LATEST, NOW)


@pytest.mark.parametrize(("span", "window", "points", "step"), [
    (900, 60, 48, 60), (86_400, 60, 48, 1800), (86_400, 10, 48, 1800), (300, 10, 48, 10), (3600, 1, 60, 60)])
def test_bucket_width_is_a_whole_number_of_windows(span, window, points, step):
    assert queries.bucket_seconds(span, window, points) == step


def test_summarize_builds_totals_watchlist_and_sparklines():
    t0 = datetime(2025, 3, 14, 14, 30, tzinfo=UTC)
    buckets = pd.DataFrame({
        "symbol": ["AAPL", "AAPL", "MSFT"], "bucket": [t0, t0 + timedelta(minutes=1), t0],
        "close": [10.0, 11.0, 20.0], "volume": [100, 300, 50], "notional": [1000.0, 3300.0, 1000.0],
        "trades": [3, 4, 1], "windows": [1, 1, 1]})
    edges = pd.DataFrame({"symbol": ["AAPL", "MSFT"], "first_open": [9.0, 25.0], "first_start": [t0, t0],
                          "last_close": [11.0, 20.0], "last_start": [t0 + timedelta(minutes=1), t0]})
    counts = pd.DataFrame({"symbol": ["AAPL", "TSLA"], "anomalies": [2, 5]})
    names = pd.DataFrame({"symbol": ["AAPL"], "company": ["Apple Inc."]})
    hour = pd.DataFrame({"symbol": ["AAPL", "AAPL", "AAPL", "MSFT"], "bucket": [t0 + timedelta(minutes=m)
                                                                             for m in (-58, -30, 0, 0)],
                         "close": [8.0, 9.5, 10.5, 20.0]})
    out = queries.summarize(buckets, edges, counts, names, hour)
    assert out.totals == {"trades": 8, "volume": 450, "notional": 5300.0, "symbols": 2, "anomalies": 7}
    rows = out.watchlist.set_index("symbol")
    assert rows.loc["AAPL", "vwap"] == pytest.approx(4300 / 400)
    assert rows.loc["AAPL", "change_pct"] == pytest.approx((11 / 9 - 1) * 100)
    assert rows.loc["MSFT", "change_pct"] == pytest.approx(-20.0)
    assert (rows.loc["AAPL", "company"], rows.loc["MSFT", "company"]) == ("Apple Inc.", "")
    assert (rows.loc["AAPL", "anomalies"], rows.loc["MSFT", "anomalies"]) == (2, 0)
    # The sparklines come from the last hour's buckets, not the range's.
    assert out.sparklines == {"AAPL": [8.0, 9.5, 10.5], "MSFT": [20.0]}
    assert queries.summarize(buckets, edges, counts, names).sparklines == {}


T_END = datetime(2025, 3, 14, 16, 0, tzinfo=UTC)


@pytest.mark.parametrize(("window_end", "newest_start", "expected_end"), [
    # anchor "latest": the view ends at the newest window's end, and so do the sparklines
    (T_END, T_END - timedelta(minutes=1), T_END),
    # anchor "now" over data that stopped 3 h ago (or a past range): the hour ending at the newest window the
    # view shows, where the row's "Last" comes from, not an empty hour before the wall clock
    (T_END + timedelta(hours=3), T_END - timedelta(minutes=1), T_END),
])
def test_sparklines_cover_the_hour_ending_at_the_views_newest_window(window_end, newest_start, expected_end):
    starts = pd.Series([newest_start - timedelta(minutes=5), pd.Timestamp(newest_start)])
    assert queries.sparkline_span(window_end, starts, 60) == (expected_end - timedelta(hours=1), expected_end)


class RecordingDb:
    """dashboard.db.Database's surface for queries.overview: answers by the query's shape, records the
    window_metrics bucket queries' params."""

    def __init__(self):
        self.bucket_queries = []

    def table_exists(self, name):
        return False

    def frame(self, sql, params=None):
        if "date_bin" in sql:
            self.bucket_queries.append(params)
            start, step = params["start"], params["step"]
            n = int((params["end"] - start).total_seconds() // step)
            return pd.DataFrame({"symbol": ["AAPL"] * n, "bucket": [start + timedelta(seconds=step * i)
                                                                    for i in range(n)],
                                 "close": [100.0 + i for i in range(n)], "volume": [1] * n,
                                 "notional": [100.0] * n, "trades": [1] * n, "windows": [1] * n})
        if "first_open" in sql:
            return pd.DataFrame({"symbol": ["AAPL"], "first_open": [100.0], "first_start": [params["start"]],
                                 "last_close": [101.0], "last_start": [params["end"] - timedelta(minutes=1)]})
        if "count(*) AS anomalies" in sql:
            return pd.DataFrame({"symbol": [], "anomalies": []})
        return pd.DataFrame({"symbol": ["AAPL"], "company": ["Apple Inc."]})


@pytest.mark.parametrize("range_key", ["5m", "15m", "1h", "1d"])
def test_sparklines_show_the_last_hour_whatever_the_range(range_key):
    db = RecordingDb()
    window = queries.resolve_window(range_key, "latest", T_END - timedelta(days=2), T_END)
    data = queries.overview(db, "datastream", 60, window)
    spark = db.bucket_queries[-1]
    assert (spark["start"], spark["end"], spark["step"]) == (T_END - timedelta(hours=1), T_END, 120)
    assert len(data.sparklines["AAPL"]) == 30  # an hour of 60 s windows in 2-window buckets
    # the range's own query for the cards and the watchlist; for 1h it is the same query, made once
    assert len(db.bucket_queries) == (1 if range_key == "1h" else 2)
    assert db.bucket_queries[0]["start"] == window.start


@pytest.mark.parametrize(("raw", "expected"), [
    ("2025-03-14T14:30:00Z", datetime(2025, 3, 14, 14, 30, tzinfo=UTC)),
    ("2025-03-14T14:30:00", datetime(2025, 3, 14, 14, 30, tzinfo=UTC)),
    ("2025-03-14 16:30:00+02:00", datetime(2025, 3, 14, 14, 30, tzinfo=UTC)),
    (None, None), ("", None)])
def test_parse_time(raw, expected):
    assert api.parse_time("from", raw) == expected


@pytest.mark.parametrize(("call", "message"), [
    (lambda: api.parse_time("from", "yesterday"), "from='yesterday' is not an ISO-8601 time"),
    (lambda: api.parse_int("limit", "ten", 10, 1, 100), "limit='ten' is not an integer"),
    (lambda: api.parse_int("limit", "0", 10, 1, 100), "limit=0 is out of range [1, 100]"),
    (lambda: api.parse_choice("engine", "spark", queries.ENGINES, "datastream"),
     "engine='spark' is not one of datastream, sql"),
    (lambda: api.parse_symbol("AA PL", required=True), "is not a ticker symbol"),
    (lambda: api.parse_symbol(None, required=True), "symbol is required")])
def test_bad_parameters_raise_bad_request(call, message):
    with pytest.raises(api.BadRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        call()


def test_symbol_is_upper_cased():
    assert api.parse_symbol("brk.b", required=False) == "BRK.B"
