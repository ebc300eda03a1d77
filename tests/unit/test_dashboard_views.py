"""The dashboard's renderers, URL routing and refresh context: pure functions checked on known inputs, no
database, no browser (the browser tests in tests/e2e drive the same code through Chromium)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pandas as pd
import pytest
from dash import no_update

from dashboard import context, queries, shell, ui, urls
from dashboard.health import Checkpoint, ClusterHealth, ConsumerLag, Job
from dashboard.views import anomalies, health, overview, quality, symbol
from marketpulse.kafka_lag import GroupLag, PartitionLag

LATEST = datetime(2025, 3, 14, 15, 0, tzinfo=UTC)
EARLIEST = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
SIZES = (60, 10)


def text(component) -> str:
    """Every string in a Dash component tree, space-separated."""
    if isinstance(component, list | tuple):
        return " ".join(text(c) for c in component)
    if hasattr(component, "children"):
        return text(component.children)
    return "" if component is None else str(component)


def find_all(component, testid: str) -> list:
    found = []
    if isinstance(component, list | tuple):
        for child in component:
            found += find_all(child, testid)
    elif hasattr(component, "to_plotly_json"):
        if getattr(component, "data-testid", None) == testid:
            found.append(component)
        found += find_all(getattr(component, "children", None), testid)
    return found


def series_frame(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["engine", "window_seconds", "earliest_start", "latest_end"]).astype(
        {"earliest_start": "datetime64[ns, UTC]", "latest_end": "datetime64[ns, UTC]"})


PRESENT = context.present_series(series_frame(("datastream", 60, EARLIEST, LATEST),
                                              ("sql", 60, EARLIEST, LATEST)))


# --- urls -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("route", "url"), [
    (urls.Route(), ("/", "")),
    (urls.Route(view="symbol", symbol="BRK.B"), ("/symbol/BRK.B", "")),
    (urls.Route(view="anomalies", rule="price_jump", filter_symbol="TSLA"),
     ("/anomalies", "?rule=price_jump&symbol=TSLA")),
    (urls.Route(view="health", range_key="1h", anchor="now", engine="sql", window_seconds=10),
     ("/health", "?range=1h&anchor=now&engine=sql&window=10")),
])
def test_a_route_survives_the_round_trip_through_its_url(route, url):
    assert urls.to_url(route, 60) == url
    assert urls.parse(*url, SIZES).with_defaults(60) == route.with_defaults(60)


def test_the_default_window_is_left_out_of_the_url():
    assert urls.to_url(urls.Route(window_seconds=60), 60) == ("/", "")


@pytest.mark.parametrize(("pathname", "search", "expected"), [
    ("/nowhere", "", urls.Route()),
    ("/symbol/aapl", "", urls.Route(view="symbol", symbol="AAPL")),
    ("/symbol/<script>", "", urls.Route(view="symbol")),
    ("/anomalies", "?rule=drop+table&range=2w&anchor=yesterday&engine=spark&window=7",
     urls.Route(view="anomalies")),
    ("/overview", "?symbol=TSLA", urls.Route()),  # the symbol filter belongs to the anomalies view
    (None, None, urls.Route()),
])
def test_a_hand_edited_url_falls_back_to_defaults(pathname, search, expected):
    assert urls.parse(pathname, search, SIZES) == expected


# --- refresh context --------------------------------------------------------------------------------

def test_the_context_travels_through_the_store_unchanged():
    resolved = context.resolve(PRESENT, "15m", "latest", "datastream", 60, LATEST + timedelta(days=1))
    assert (resolved.start, resolved.end, resolved.has_data) == (LATEST - timedelta(minutes=15), LATEST, True)
    assert context.ViewContext.from_store(resolved.to_store()) == resolved
    assert context.ViewContext.from_store(None) is None


def test_banner_says_why_nothing_is_shown():
    now = LATEST
    down = context.unreachable("connection refused", "15m", "latest", "datastream", 60)
    assert context.banner(down, {}, "db:5432/x")[1] == "banner error"
    assert "connection refused" in text(context.banner(down, {}, "db:5432/x")[0])
    empty = context.resolve({}, "15m", "latest", "datastream", 60, now)
    assert "No data yet" in text(context.banner(empty, {}, "db")[0])
    missing = context.resolve(PRESENT, "15m", "latest", "datastream", 10, now)
    children, css = context.banner(missing, PRESENT, "db")
    assert css == "banner warn"
    assert ("DataStream has no 10 s windows; data exists for: DataStream 60 s, Flink SQL 60 s."
            in text(children))
    fine = context.resolve(PRESENT, "15m", "latest", "datastream", 60, now)
    assert context.banner(fine, PRESENT, "db") == (None, "banner hidden")


def test_range_text_marks_historical_and_live_data():
    historical = context.resolve(PRESENT, "15m", "latest", "datastream", 60, LATEST + timedelta(hours=2))
    line = text(context.range_text(historical, LATEST + timedelta(hours=2)))
    assert "last 15 min of data" in line and "2025-03-14 14:45:00 → 2025-03-14 15:00:00 UTC" in line
    assert "latest window ended 2 h ago — historical data" in line
    assert "live" in text(context.range_text(historical, LATEST + timedelta(seconds=30)))
    now = LATEST + timedelta(hours=3)
    relative = context.resolve(PRESENT, "1h", "now", "datastream", 60, now)
    assert "no data this recent: latest window ended 3 h ago" in text(context.range_text(relative, now))
    assert "unreachable" in context.range_text(context.unreachable("x", "1h", "now", "sql", 60), now)


def test_options_disable_what_has_no_data():
    assert [o["disabled"] for o in context.engine_options(PRESENT)] == [False, False]
    only_ds = {key: row for key, row in PRESENT.items() if key[0] == "datastream"}
    assert [o["disabled"] for o in context.engine_options(only_ds)] == [False, True]
    assert [o["disabled"] for o in context.engine_options(None)] == [False, False]
    assert [(o["value"], o["disabled"]) for o in context.window_options(PRESENT, "sql", [60, 10])] == [
        (60, False), (10, True)]


def test_symbol_options_name_the_company_when_known():
    known = pd.DataFrame({"symbol": ["AAPL", "ZZZ"], "company": ["Apple Inc.", None]})
    assert context.symbol_options(known) == [{"label": "AAPL · Apple Inc.", "value": "AAPL"},
                                             {"label": "ZZZ", "value": "ZZZ"}]


def test_pills_show_database_and_flink_state():
    running = ClusterHealth(ok=True, jobs=[Job("a", "j", "RUNNING", 0, 0), Job("b", "k", "FINISHED", 0, 0)])
    assert text(context.pills(True, running)) == "PostgreSQL ✓ Flink ✓ 1 running"
    down = ClusterHealth(ok=False, error="x")
    assert text(context.pills(False, down)) == "PostgreSQL ✗ Flink ✗ unreachable"
    assert text(context.pills(True, None)) == "PostgreSQL ✓ Flink … checking"


# --- shell ------------------------------------------------------------------------------------------

def test_only_what_differs_is_written_back():
    assert shell.changed("a", "a") is no_update and shell.changed("b", "a") == "b"


def test_the_url_decides_on_load_but_a_click_in_the_same_round_wins():
    from_url = urls.Route(view="anomalies", rule="price_jump", range_key="1h")
    controls = urls.Route(view="symbol", symbol="AAPL")
    route, write = urls.reconcile(from_url, controls, url_moved=True, acted={"view"})
    assert route == urls.Route(view="symbol", symbol="AAPL", rule="price_jump", range_key="1h")
    assert write  # the click's view goes into the address bar


def test_back_restores_the_url_without_rewriting_it():
    from_url = urls.Route(view="symbol")  # /symbol without a symbol: keep the one selected
    controls = urls.Route(view="overview", symbol="MSFT")
    route, write = urls.reconcile(from_url, controls, url_moved=True, acted=set())
    assert (route.view, route.symbol, write) == ("symbol", "MSFT", False)


def test_controls_decide_when_the_address_did_not_move():
    controls = urls.Route(view="health", engine="sql")
    assert urls.reconcile(urls.Route(), controls, url_moved=False, acted={"engine"}, first_symbol="AAPL") == (
        urls.Route(view="health", engine="sql", symbol="AAPL"), True)


def test_row_links_keep_the_range_engine_and_window():
    shown = context.ViewContext(db_ok=True, range_key="all", anchor="latest", engine="sql", window_seconds=10)
    assert urls.symbol_href("TSLA", shown, 60) == "/symbol/TSLA?range=all&engine=sql&window=10"


# --- formatting -------------------------------------------------------------------------------------

def test_formatting():
    assert [ui.fmt_age(s) for s in (5, 90, 7200, -3 * 86400)] == ["5 s", "2 min", "2 h", "3 days"]
    assert [ui.fmt_price(v) for v in (1234.567, None, float("nan"))] == ["1,234.57", "—", "—"]
    assert (ui.fmt_change(1.5).children, ui.fmt_change(1.5).className) == ("▲ +1.50%", "up")
    assert (ui.fmt_change(-0.25).children, ui.fmt_change(-0.25).className) == ("▼ -0.25%", "down")
    assert ui.fmt_time(LATEST) == "2025-03-14 15:00:00" and ui.fmt_time(None) == "—"


# --- views ------------------------------------------------------------------------------------------

def overview_data() -> queries.Overview:
    watchlist = pd.DataFrame({
        "symbol": ["AAPL", "MSFT"], "company": ["Apple Inc.", "Microsoft"], "last_close": [191.25, 410.0],
        "change_pct": [1.25, -0.5], "vwap": [190.5, 409.0], "volume": [12000, 3000], "anomalies": [2, 0]})
    return queries.Overview(totals={"trades": 1234, "volume": 15000, "notional": 3_500_000, "symbols": 2,
                                    "anomalies": 2},
                            watchlist=watchlist, sparklines={"AAPL": [1.0, 2.0]})


def test_overview_cards_and_watchlist():
    data = overview_data()
    assert overview.card_values(data.totals) == ("1,234", "15.00K", "$3.50M", "2", "2")
    rows = find_all(overview.watchlist_table(data, lambda symbol: f"/symbol/{symbol}?window=10"), "watch-row")
    assert rows[1].children[0].children.href == "/symbol/MSFT?window=10"
    assert [getattr(r, "data-symbol") for r in rows] == ["AAPL", "MSFT"]
    assert text(rows[0]).split()[:7] == ["AAPL", "Apple", "Inc.", "191.25", "▲", "+1.25%", "190.50"]
    assert [text(b) for b in find_all(overview.watchlist_table(data), "anomaly-badge")] == ["2"]
    empty = queries.Overview(totals={}, watchlist=pd.DataFrame())
    assert text(overview.watchlist_table(empty)) == "No windows in this range"


def test_overview_prefers_the_sql_jobs_top_movers():
    data = overview_data()
    assert overview.movers(data, pd.DataFrame(), 60) == (data.watchlist, overview.MOVERS_TITLE)
    sql = pd.DataFrame({"symbol": ["MSFT"], "change_pct": [3.0],
                        "window_end": [pd.Timestamp("2025-03-14 15:00:00", tz="UTC")]})
    frame, title = overview.movers(data, sql, 60)
    assert frame is sql and title == "Top movers · Flink SQL, 60 s window ending 15:00:00"


def test_symbol_header_and_note():
    frame = pd.DataFrame({"open": [100.0, 101.0], "close": [101.0, 102.0], "high": [101.5, 103.0],
                          "low": [99.0, 100.5], "volume": [10, 30], "notional": [1005.0, 3045.0]})
    assert text(symbol.header("AAPL", frame)) == "AAPL 102.00 ▲ +2.00% VWAP 101.25 H 103.00 · L 99.00"
    assert text(symbol.header("AAPL", frame.iloc[0:0])) == "AAPL"
    note = text(symbol.note(2, 1, "sql", 10, truncated=True, sql_indicators=False))
    assert f"latest {queries.MAX_CANDLES:,} windows" in note
    assert ("2 candles · 1 anomalies · 0 anomalous windows (multivariate) · engine Flink SQL · bottom panel: "
            "z-score") in note
    sql_note = symbol.note(2, 0, "datastream", 60, truncated=False, sql_indicators=True)
    assert "indicators table" in text(sql_note)


def test_symbol_forecast_line_says_what_the_band_is_and_each_models_errors():
    forecast = pd.DataFrame({"bar_seconds": [60, 60], "horizon": [1, 2], "level": [0.95, 0.95],
                             "origin_start": [LATEST, LATEST]})
    errors = pd.DataFrame({"model": ["arima", "linear"], "spec": ["ARIMA(1,1,0)", "linear trend"],
                           "forecasts": [120, 0], "mape": [0.12345, None], "mae": [0.2468, None],
                           "coverage": [0.9, None], "level": [0.95, 0.95]})
    line = symbol.forecast_summary(forecast, errors)
    assert text(line).startswith("Forecast of the next 2 closes of 60 s bars from the bar of "
                                 "2025-03-14 15:00:00 UTC, 95% interval (shaded: ARIMA).")
    assert text(find_all(line, "forecast-arima")) == ("ARIMA: MAPE 0.123 %, MAE 0.247, 90% in the interval "
                                                       "(120 forecasts). ")
    assert text(find_all(line, "forecast-linear")) == "Linear trend: none reached its bar yet. "
    assert "no forecast has reached" in text(symbol.forecast_summary(forecast, errors.iloc[0:0]))
    assert symbol.forecast_summary(forecast.iloc[0:0], errors) == []


def test_anomaly_table_rows_and_count():
    frame = pd.DataFrame([{"event_time": LATEST, "symbol": "TSLA", "rule": "price_jump", "price": 250.5,
                           "size": 100, "z_score": 3.14159, "mean": None, "stddev": None, "trade_id": "t-1"}])
    rows = find_all(anomalies.table(frame, lambda symbol: f"/symbol/{symbol}?range=all"), "anomaly-row")
    assert [(getattr(r, "data-symbol"), getattr(r, "data-rule")) for r in rows] == [("TSLA", "price_jump")]
    assert rows[0].children[1].children.href == "/symbol/TSLA?range=all"
    assert text(rows[0]) == "2025-03-14 15:00:00 TSLA price_jump 250.50 100 3.14 — — t-1"
    assert text(anomalies.table(frame.iloc[0:0])) == "No anomalies match these filters in this range"
    assert anomalies.count_text(250, 200) == ("250 in range · newest 200 shown · "
                                              "click a row to open the symbol")
    assert anomalies.count_text(3, 3) == "3 in range · 3 shown · click a row to open the symbol"


def test_health_cluster_line_and_jobs_table():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    now_ms = now.timestamp() * 1000
    job = Job("j1", "market-metrics", "RUNNING", 0, 3_600_000, records_in_per_s=1234.5, pending_records=7,
              backpressure="low", last_checkpoint=Checkpoint(12, "COMPLETED", now_ms - 30_000, 250, 1024))
    done = Job("j2", "old", "CANCELED", 0, 90_000)
    cluster = ClusterHealth(ok=True, flink_version="2.2.1", taskmanagers=2, slots_total=8, slots_available=5,
                            jobs=[job, done])
    assert health.cluster_line(cluster) == "Flink 2.2.1 · 2 TaskManager(s) · 5/8 slots free · 2 job(s) listed"
    assert health.cluster_line(None) == "Asking Flink's REST API…"
    assert "unreachable: boom" in text(health.cluster_line(ClusterHealth(ok=False, error="boom")))
    rows = find_all(health.jobs_table(cluster, now), "job-row")
    assert [(getattr(r, "data-job-id"), getattr(r, "data-state")) for r in rows] == [
        ("j1", "RUNNING"), ("j2", "CANCELED")]
    assert text(rows[0]) == "market-metrics j1 RUNNING 1 h 1,234.5 — 7 low #12 30 s ago · 250 ms"
    assert text(rows[1]) == "old j2 CANCELED ran 2 min — — — — —"
    assert text(health.jobs_table(ClusterHealth(ok=True), now)) == "The cluster lists no jobs."
    assert text(health.jobs_table(None, now)) == "No job information."


def test_health_view_lag_table():
    partitions = (PartitionLag(0, 1000, 990, 10), PartitionLag(1, 2500, None, 2500))
    lag = ConsumerLag(ok=True, groups=[GroupLag("marketpulse-datastream", "trades", partitions)])
    rows = find_all(health.lag_table(lag), "lag-row")
    assert [(getattr(r, "data-group"), getattr(r, "data-total")) for r in rows] == [
        ("marketpulse-datastream", "2510")]
    assert text(rows[0]) == "marketpulse-datastream trades 2,510 p0 10 p1 2,500"
    assert "unreachable: Kafka 127.0.0.1:1: timed out" in text(
        health.lag_table(ConsumerLag(ok=False, error="Kafka 127.0.0.1:1: timed out")))
    assert text(health.lag_table(None)) == "Asking Kafka…"
    assert "No consumer group" in text(health.lag_table(ConsumerLag(ok=True)))


def test_pipeline_panel_totals_per_kind_and_engine():
    counts = pd.DataFrame({"kind": ["late_trades", "dead_letters", "dead_letters"],
                           "engine": ["datastream", "datastream", "sql"], "total": [3, 2, 5],
                           "in_range": [1, 0, 4]})
    reasons = pd.DataFrame({"reason": ["invalid JSON"], "records": [7]})
    panel = health.pipeline_panel(counts, reasons)
    assert text(find_all(panel, "pipeline-late_trades-total")) == "3"
    assert text(find_all(panel, "pipeline-dead_letters-total")) == "7"
    dead = text(find_all(panel, "pipeline-dead_letters"))
    assert "4 in the selected range · DataStream 2, Flink SQL 5" in dead
    assert "invalid JSON — 7" in text(panel)
    nothing = health.pipeline_panel(counts.iloc[0:0], reasons.iloc[0:0])
    assert "none recorded" in text(nothing) and "Top dead-letter reasons" not in text(nothing)


def test_every_view_has_a_layout_with_its_id():
    deps = SimpleNamespace(settings=SimpleNamespace(flink=SimpleNamespace(rest_url="http://flink:8081")))
    from dashboard.views import all_views

    assert [v.NAME for v in all_views()] == list(urls.VIEWS)
    assert [v.layout(deps).id for v in all_views()] == [f"view-{name}" for name in urls.VIEWS]


def test_market_banner_only_while_every_live_source_says_closed():
    closed = pd.DataFrame({"source": ["yahoo"], "exchange": ["XNYS"], "is_open": [False],
                           "next_open": [pd.Timestamp("2026-11-23 14:30", tz="UTC")]})
    assert text(context.market_banner(closed)).startswith(
        "Market closed.  XNYS is closed; the live source (yahoo) sends nothing until it opens at "
        "2026-11-23 14:30:00 UTC.")
    assert context.market_banner(closed.assign(is_open=[True])) is None
    assert context.market_banner(pd.DataFrame()) is None  # synthetic data: no live source


def test_quality_table_and_summary_from_a_score():
    from marketpulse.analytics.scoring import score

    detections = [("a", "price_jump", 0, 250), ("b", "price_jump", 0, 750), ("c", "price_zscore", 0, None)]
    labels = [{"trade_id": "a", "kind": "price_spike"}, {"trade_id": "z", "kind": "price_spike"}]
    scores = score(detections, labels)
    rows = find_all(quality.table(scores), "quality-row")
    assert [text(row.children) for row in rows] == [
        "price_zscore 1 0.000 0.000 — — 0.000",
        "price_jump 2 0.500 0.500 0.500 250 ms 0.500",  # one delay among the true detections: 250 ms
        "volume_zscore 0 — — — — —",
        "any 3 0.333 0.500 0.400 250 ms 0.500",
    ]
    assert quality.summary(scores, 3).startswith("2 injected anomalies (price_spike 2) · 3 anomaly rows")


def test_login_is_off_by_default_and_needs_a_password_when_a_user_is_set(tmp_path):
    import pytest

    from dashboard.app import login_users
    from marketpulse.config import ConfigError, load_settings

    assert login_users(load_settings(environ={})) == {}
    with pytest.raises(ConfigError, match="dashboard.auth_user is set but has no password"):
        login_users(load_settings(environ={"MARKETPULSE_DASHBOARD_AUTH_USER": "ops"}))
    secret = tmp_path / "dashboard.password"
    secret.write_text("s3cret with space\n")
    assert login_users(load_settings(environ={"MARKETPULSE_DASHBOARD_AUTH_USER": "ops",
                                              "MARKETPULSE_DASHBOARD_AUTH_PASSWORD_FILE": str(secret)})) == {
        "ops": "s3cret with space"}
