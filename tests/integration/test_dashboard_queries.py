"""dashboard.queries against a real PostgreSQL: a scratch database with a handful of hand-written rows, and
the exact values each query must return."""

from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest
from psycopg2.extras import execute_values

from dashboard import queries
from dashboard.db import Database, DatabaseUnavailable
from marketpulse.config import postgres_dsn
from tests import support

pytestmark = pytest.mark.integration

T0 = datetime(2025, 6, 2, 13, 30, tzinfo=UTC)


def window(engine, symbol, seconds, i, open_, close, volume, trades, vwap=None):
    start = T0 + timedelta(seconds=seconds * i)
    vwap = vwap if vwap is not None else (open_ + close) / 2
    return (engine, symbol, seconds, start, start + timedelta(seconds=seconds), open_, max(open_, close) + 1,
            min(open_, close) - 1, close, vwap, volume, vwap * volume, trades, trades, 0,
            min(open_, close) - 1, max(open_, close) + 1, vwap, 0.1)


WINDOWS = [
    # AAPL: 4 one-minute windows, 100 -> 104
    window("datastream", "AAPL", 60, 0, 100.0, 101.0, 10, 2),
    window("datastream", "AAPL", 60, 1, 101.0, 102.0, 20, 3),
    window("datastream", "AAPL", 60, 2, 102.0, 103.0, 30, 4),
    window("datastream", "AAPL", 60, 3, 103.0, 104.0, 40, 5),
    # MSFT: 2 one-minute windows at the end, 50 -> 45; NVDA has no reference row
    window("datastream", "MSFT", 60, 2, 50.0, 48.0, 5, 1),
    window("datastream", "MSFT", 60, 3, 48.0, 45.0, 5, 1),
    window("datastream", "NVDA", 60, 3, 900.0, 910.0, 1, 1),
    # other series: 10 s windows and the SQL engine
    window("datastream", "AAPL", 10, 0, 100.0, 100.5, 1, 1),
    window("datastream", "AAPL", 10, 1, 100.5, 101.0, 1, 1),
    window("sql", "AAPL", 60, 0, 100.0, 101.0, 10, 2),
]
ANOMALIES = [
    ("a1", "price_zscore", "AAPL", T0 + timedelta(seconds=30), 100.7, 10, 5.5, 100.0, 0.1),
    ("a2", "price_jump", "AAPL", T0 + timedelta(seconds=150), 103.9, 5, 3.2, 102.0, 0.5),
    ("a2", "price_zscore", "AAPL", T0 + timedelta(seconds=150), 103.9, 5, 6.0, 102.0, 0.3),
    ("m1", "volume_zscore", "MSFT", T0 + timedelta(seconds=200), 47.0, 9000, 4.4, 50.0, 1.0),
]


@pytest.fixture
def db(scratch_db):
    with closing(support.pg_connect(scratch_db)) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO symbols (symbol, company, sector, exchange, start_price) "
                        "VALUES (%s, %s, 'Tech', 'NASDAQ', 1)",
                        [("AAPL", "Apple Inc."), ("MSFT", "Microsoft Corp."), ("TSLA", "Tesla Inc.")])
        execute_values(cur, "INSERT INTO window_metrics VALUES %s", WINDOWS)
        execute_values(cur, "INSERT INTO anomalies (trade_id, rule, symbol, event_time, price, size, "
                            "z_score, mean, stddev, detected_at) VALUES %s",
                       [(*a, a[3]) for a in ANOMALIES])
        # The SQL job's z-score rule (engine 'sql'): the views show the detector's rows only.
        cur.execute("INSERT INTO anomalies (engine, trade_id, rule, symbol, event_time, price, size, "
                    "detected_at) VALUES ('sql', 'a1', 'price_zscore', 'AAPL', %s, 1, 1, %s)",
                    (T0 + timedelta(seconds=300), T0 + timedelta(seconds=300)))
        execute_values(cur, "INSERT INTO late_trades VALUES %s", [
            ("datastream", "l1", "AAPL", 1.0, 1, "buy", T0 + timedelta(seconds=10), None),
            ("datastream", "l2", "AAPL", 1.0, 1, "buy", T0 + timedelta(hours=2), None),
            ("sql", "l1", "AAPL", 1.0, 1, "buy", T0 + timedelta(seconds=10), None)])
        execute_values(cur, "INSERT INTO dead_letters VALUES %s", [
            ("datastream", "h1", "{", "invalid JSON", "trades", T0),
            ("datastream", "h2", "{}", "missing field price", "trades", T0),
            ("datastream", "h3", "[", "invalid JSON", "trades", T0)])
    database = Database(postgres_dsn(scratch_db, "reader"))
    yield database
    database.close()


def test_series_lists_each_engine_and_window_size_with_its_extent(db):
    frame = queries.series(db)
    assert [(r.engine, r.window_seconds, r.earliest_start, r.latest_end) for r in frame.itertuples()] == [
        ("datastream", 10, T0, T0 + timedelta(seconds=20)),
        ("datastream", 60, T0, T0 + timedelta(minutes=4)),
        ("sql", 60, T0, T0 + timedelta(minutes=1)),
    ]


def test_symbols_union_reference_rows_and_symbols_seen_in_windows(db):
    frame = queries.symbols(db)
    assert frame["symbol"].tolist() == ["AAPL", "MSFT", "NVDA", "TSLA"]
    assert frame.set_index("symbol").loc["NVDA", "company"] is None
    assert frame.set_index("symbol").loc["AAPL", "company"] == "Apple Inc."
    assert queries.symbol_known(db, "TSLA") and queries.symbol_known(db, "NVDA")
    assert not queries.symbol_known(db, "ZZZZ")


def test_overview_totals_and_watchlist_for_the_last_two_minutes_of_data(db):
    latest = T0 + timedelta(minutes=4)
    window = queries.TimeWindow(latest - timedelta(minutes=2), latest, "latest", "5m")
    data = queries.overview(db, "datastream", 60, window)
    # windows 2 and 3 of AAPL and MSFT, window 3 of NVDA
    assert data.totals == {"trades": 4 + 5 + 1 + 1 + 1, "volume": 30 + 40 + 5 + 5 + 1,
                           "notional": pytest.approx(30 * 102.5 + 40 * 103.5 + 5 * 49 + 5 * 46.5 + 905),
                           "symbols": 3, "anomalies": 3}
    rows = data.watchlist.set_index("symbol")
    assert rows.loc["AAPL", "last_close"] == 104.0
    assert rows.loc["AAPL", "change_pct"] == pytest.approx((104 / 102 - 1) * 100)
    assert rows.loc["AAPL", "vwap"] == pytest.approx((30 * 102.5 + 40 * 103.5) / 70)
    assert rows.loc["AAPL", "volume"] == 70
    assert rows.loc["MSFT", "change_pct"] == pytest.approx(-10.0)
    assert rows.loc["MSFT", "anomalies"] == 1 and rows.loc["AAPL", "anomalies"] == 2
    assert rows.loc["NVDA", "company"] == ""
    # The sparklines cover the hour ending at the newest window, whatever the range: AAPL's four windows
    # in 2-minute buckets (an hour of 60 s windows in 30 points), the two outside this range included.
    assert data.sparklines == {"AAPL": [101.5, 103.5], "MSFT": [46.5], "NVDA": [910.0]}


def test_sparklines_of_a_range_past_the_data_end_at_the_newest_window(db):
    # Anchor "now" a few hours after the data stopped: the range's rows end at T0 + 4 min, so do the lines.
    window = queries.TimeWindow(T0 - timedelta(days=1), T0 + timedelta(hours=3), "now", "1d")
    data = queries.overview(db, "datastream", 60, window)
    assert data.sparklines == {"AAPL": [101.5, 103.5], "MSFT": [46.5], "NVDA": [910.0]}
    # A range that ends before the newest window: the hour ending at the range's last window (T0 + 2 min).
    early = queries.TimeWindow(T0, T0 + timedelta(minutes=2), "latest", "5m")
    assert queries.overview(db, "datastream", 60, early).sparklines == {"AAPL": [101.5]}


def test_overview_of_an_empty_range_is_zero_not_an_error(db):
    far = queries.TimeWindow(T0 - timedelta(days=2), T0 - timedelta(days=1), "latest", "1d")
    data = queries.overview(db, "datastream", 60, far)
    assert data.totals == {"trades": 0, "volume": 0, "notional": 0.0, "symbols": 0, "anomalies": 0}
    assert data.watchlist.empty


def test_candles_in_range_oldest_first_and_truncated_to_the_latest(db):
    frame, truncated = queries.candles(db, "datastream", 60, "AAPL", T0, T0 + timedelta(minutes=4))
    assert frame["close"].tolist() == [101.0, 102.0, 103.0, 104.0] and not truncated
    assert frame["window_start"].iloc[0] == T0
    frame, truncated = queries.candles(db, "datastream", 60, "AAPL", None, None, limit=3)
    assert frame["close"].tolist() == [102.0, 103.0, 104.0] and truncated
    frame, _ = queries.candles(db, "sql", 60, "AAPL", None, None)
    assert frame["close"].tolist() == [101.0]
    frame, _ = queries.candles(db, "datastream", 10, "AAPL", T0, T0 + timedelta(seconds=10))
    assert frame["close"].tolist() == [100.5]


def test_anomalies_filtered_by_symbol_rule_and_time_newest_first(db):
    every = queries.anomalies(db)
    assert list(zip(every["trade_id"], every["rule"], strict=True)) == [
        ("m1", "volume_zscore"), ("a2", "price_jump"), ("a2", "price_zscore"), ("a1", "price_zscore")]
    assert queries.anomalies(db, symbol="AAPL")["trade_id"].tolist() == ["a2", "a2", "a1"]
    assert queries.anomalies(db, rule="price_zscore")["trade_id"].tolist() == ["a2", "a1"]
    ranged = queries.anomalies(db, start=T0 + timedelta(seconds=30), end=T0 + timedelta(seconds=150))
    assert ranged["trade_id"].tolist() == ["a1"]  # end is exclusive
    assert queries.anomalies(db, limit=1)["trade_id"].tolist() == ["m1"]
    assert queries.anomalies(db, symbol="TSLA").empty
    row = every.iloc[0]
    assert (row["price"], row["size"], row["z_score"]) == (47.0, 9000, 4.4)


def test_anomaly_timeline_counts_per_bucket_and_rule(db):
    frame = queries.anomaly_timeline(db, T0, T0 + timedelta(minutes=4), 120)
    assert [(r.bucket, r.rule, r.anomalies) for r in frame.itertuples()] == [
        (T0, "price_zscore", 1),
        (T0 + timedelta(minutes=2), "price_jump", 1),
        (T0 + timedelta(minutes=2), "price_zscore", 1),
        (T0 + timedelta(minutes=2), "volume_zscore", 1)]
    only = queries.anomaly_timeline(db, T0, T0 + timedelta(minutes=4), 120, symbol="AAPL", rule="price_jump")
    assert only["anomalies"].tolist() == [1]
    assert queries.anomaly_extent(db) == (T0 + timedelta(seconds=30), T0 + timedelta(seconds=200))


def test_sql_indicators_and_sliding_averages_of_one_symbol(db, scratch_db):
    """The indicators of the symbol's 10 s bars renamed for the figure (010's MACD columns too), and the HOP
    windows whose last 10 s slide starts in [start, end)."""
    with closing(support.pg_connect(scratch_db)) as conn, conn.cursor() as cur:
        execute_values(cur, "INSERT INTO indicators (symbol, bar_seconds, bar_start, bar_end, close, sma, "
                            "bollinger_upper, bollinger_lower, ewma, rsi, macd, macd_signal, macd_histogram, "
                            "sma_long, volatility) VALUES %s",
                       [("AAPL", 10, T0 + timedelta(seconds=10 * i), T0 + timedelta(seconds=10 * i + 10),
                         100.0 + i, 100.0, 101.0, 99.0, 100.5, 55.0, 0.1 * i, 0.05, 0.1 * i - 0.05, None,
                         0.001) for i in range(3)])
        execute_values(cur, "INSERT INTO moving_averages VALUES %s",
                       [("AAPL", 60, 10, T0 + timedelta(seconds=10 * i - 60), T0 + timedelta(seconds=10 * i),
                         100.0 + i, 100.0 + i, 10, 2) for i in range(1, 8)])
        conn.commit()
    frame = queries.indicators(db, "AAPL", 10, T0 + timedelta(seconds=10), None)
    assert list(frame["window_start"]) == [T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)]
    assert list(frame["macd"]) == [0.1, 0.2] and list(frame["bb_upper"]) == [101.0, 101.0]
    assert frame["sma_long"].isna().all() and frame["ema_fast"].isna().all()
    assert queries.indicators(db, "AAPL", 60, None, None).empty
    averages = queries.moving_averages(db, "AAPL", 60, 10, T0 + timedelta(seconds=20),
                                       T0 + timedelta(seconds=50))
    # Window ends 30..50 s: their last slides start at 20, 30 and 40 s.
    assert list(averages["window_end"]) == [T0 + timedelta(seconds=s) for s in (30, 40, 50)]
    assert list(averages["avg_price"]) == [103.0, 104.0, 105.0]
    assert queries.moving_averages(db, "AAPL", 60, 5, None, None).empty


def test_the_newest_forecast_made_from_a_candle_in_view_and_its_errors(db, scratch_db):
    """Origins at bars 1 and 2: a view whose candles end at bar 1 gets bar 1's forecast, a later one bar 2's;
    the errors are the forecast_errors rows of the symbol and bar size."""
    with closing(support.pg_connect(scratch_db)) as conn, conn.cursor() as cur:
        execute_values(cur, "INSERT INTO forecasts (symbol, bar_seconds, model, origin_start, target_start, "
                            "horizon, engine, spec, bars_used, origin_close, point, lower, upper, level) "
                            "VALUES %s",
                       [("AAPL", 60, model, T0 + timedelta(minutes=o), T0 + timedelta(minutes=o + h), h,
                         "datastream", "s", 20, 100.0 + o, 100.0 + o + h, 99.0, 110.0, 0.95)
                        for model in ("arima", "linear") for o in (1, 2) for h in (1, 2)])
        execute_values(cur, "INSERT INTO forecast_errors (symbol, bar_seconds, model, forecasts, flagged, "
                            "mae, mape, coverage, level) VALUES %s",
                       [("AAPL", 60, "arima", 4, 0, 0.5, 0.25, 0.75, 0.95),
                        ("AAPL", 10, "arima", 1, 0, 9.0, 9.0, 0.0, 0.95)])
        conn.commit()
    early = queries.forecast(db, "AAPL", 60, T0, T0 + timedelta(minutes=1))
    assert list(early["origin_start"].unique()) == [T0 + timedelta(minutes=1)]
    assert list(zip(early["model"], early["point"], strict=True)) == [
        ("arima", 102.0), ("arima", 103.0), ("linear", 102.0), ("linear", 103.0)]
    assert set(queries.forecast(db, "AAPL", 60, T0, T0 + timedelta(minutes=3))["origin_start"]) == {
        T0 + timedelta(minutes=2)}
    assert queries.forecast(db, "AAPL", 60, T0 + timedelta(minutes=3), T0 + timedelta(minutes=4)).empty
    errors = queries.forecast_errors(db, "AAPL", 60)
    assert errors[["model", "forecasts", "mae", "mape", "coverage"]].values.tolist() == [
        ["arima", 4, 0.5, 0.25, 0.75]]


def test_pipeline_counts_late_and_dead_records_per_engine(db):
    frame = queries.pipeline_counts(db, T0, T0 + timedelta(hours=1))
    assert [tuple(r) for r in frame[["kind", "engine", "total", "in_range"]].itertuples(index=False)] == [
        ("dead_letters", "datastream", 3, 3), ("late_trades", "datastream", 2, 1),
        ("late_trades", "sql", 1, 1)]
    reasons = queries.dead_letter_reasons(db)
    assert list(zip(reasons["reason"], reasons["records"], strict=True)) == [
        ("invalid JSON", 2), ("missing field price", 1)]


def test_unreachable_database_raises_a_clear_error(scratch_db):
    dead = Database(postgres_dsn(scratch_db, "reader").replace(f"port={scratch_db.postgres.port}", "port=1"),
                    connect_timeout=1)
    with pytest.raises(DatabaseUnavailable, match="127.0.0.1|refused|connect"):
        queries.series(dead)


def test_pool_recovers_after_its_connections_are_killed(db, scratch_db):
    assert queries.symbols(db)["symbol"].tolist()[:1] == ["AAPL"]
    # Kill every dashboard session on the scratch database, as a server restart would.
    killed = support.query(scratch_db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       "WHERE datname = current_database() AND application_name = "
                                       "'marketpulse-dashboard'")
    assert killed and all(row[0] for row in killed)
    frame = queries.series(db)  # the broken pool is dropped and the query retried on a fresh one
    assert isinstance(frame, pd.DataFrame) and len(frame) == 3


def test_hourly_rollup_stays_exact_and_long_ranges_match_the_raw_windows(db, scratch_db):
    """004_dashboard.sql's trigger-maintained roll-up: inserts, upserts (a Flink replay) and deletes keep it
    equal to a GROUP BY over window_metrics, and the overview of a long range read through it (whole hours
    from the roll-up, partial hours raw) equals the overview computed from raw windows only."""
    rows = [window("datastream", "TSLA", 60, 240 + i, 200.0 + (i % 17), 200.5 + (i % 13), 3 + i % 5,
                   1 + i % 3) for i in range(8 * 60)]  # 8 hours of one-minute windows, from T0 + 4 h
    with closing(support.pg_connect(scratch_db)) as conn, conn.cursor() as cur:
        execute_values(cur, "INSERT INTO window_metrics VALUES %s", rows)
        replay = window("datastream", "TSLA", 60, 300, 1.0, 2.0, 999, 7)  # an upsert rewriting one window
        cur.execute("INSERT INTO window_metrics VALUES %s ON CONFLICT (engine, symbol, window_seconds, "
                    "window_start) DO UPDATE SET close = EXCLUDED.close, volume = EXCLUDED.volume, "
                    "notional = EXCLUDED.notional, trade_count = EXCLUDED.trade_count", (replay,))
        cur.execute("DELETE FROM window_metrics WHERE symbol = 'TSLA' AND window_start = %s",
                    (T0 + timedelta(minutes=400),))
    expected = support.query(scratch_db, """
        SELECT engine, window_seconds, date_trunc('hour', window_start, 'UTC'), symbol, count(*), sum(volume),
               round(sum(notional)::numeric, 6), sum(trade_count), round(sum(close)::numeric, 6)
        FROM window_metrics GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4""")
    rollup = support.query(scratch_db, """
        SELECT engine, window_seconds, hour, symbol, windows, volume, round(notional::numeric, 6),
               trade_count, round(close_sum::numeric, 6)
        FROM window_metrics_hourly WHERE windows <> 0 ORDER BY 1, 2, 3, 4""")
    assert rollup == expected
    long_range = queries.TimeWindow(T0 + timedelta(hours=4, minutes=17), T0 + timedelta(hours=11, minutes=48),
                                    "latest", "all")
    assert long_range.seconds >= queries.ROLLUP_MIN_SECONDS
    via_rollup = queries.overview(db, "datastream", 60, long_range)
    raw = queries.summarize(
        queries.overview_buckets(db, "datastream", 60, long_range.start, long_range.end, 3600),
        queries.first_last(db, "datastream", 60, long_range.start, long_range.end, ["TSLA"]),
        queries.anomaly_counts_by_symbol(db, long_range.start, long_range.end),
        db.frame("SELECT symbol, company FROM symbols"))
    assert via_rollup.totals == {**raw.totals, "notional": pytest.approx(raw.totals["notional"])}
    assert via_rollup.totals["trades"] == sum(r[12] for r in rows if long_range.start <= r[3] < long_range.end
                                              and r[3] not in (T0 + timedelta(minutes=300),
                                                               T0 + timedelta(minutes=400))) + 7
    tsla_rollup = via_rollup.watchlist.set_index("symbol").loc["TSLA"]
    tsla_raw = raw.watchlist.set_index("symbol").loc["TSLA"]
    assert tsla_rollup["vwap"] == pytest.approx(tsla_raw["vwap"])
    assert tsla_rollup["change_pct"] == pytest.approx(tsla_raw["change_pct"])


@pytest.mark.parametrize("value", [
    T0, T0 + timedelta(milliseconds=250), T0 + timedelta(microseconds=7),
    datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2025, 6, 2, 15, 30, tzinfo=timezone(timedelta(hours=2))),  # an offset: the same instant in UTC
])
def test_the_api_times_postgresql_writes_are_the_apis_iso(db, value):
    """/api/metrics and /api/anomalies take their times as text from PostgreSQL (queries.iso_text); every
    other time of the API is api.iso. The two must write the same text."""
    from dashboard.api import iso

    [(text,)] = db.rows(f"SELECT {queries.iso_text('%(t)s::timestamptz')}", {"t": value})
    assert text == iso(value)
