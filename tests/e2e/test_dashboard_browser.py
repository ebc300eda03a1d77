"""The dashboard in a real browser: `python -m dashboard` as a server process on a free port, pointed at a
scratch database seeded with tests/e2e/seed.py, driven by Playwright (sync API) through Debian's Chromium
(/usr/bin/chromium, installed by `python -m stack setup --browser`; no browser download). Screenshots of
every view land in test-artifacts/."""

from __future__ import annotations

import copy
import re
import time
import uuid
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from tests import support
from tests.e2e import seed
from tests.e2e.browser import (
    TIMEOUT_MS,
    Dashboard,
    choose,
    free_port,
    open_tab,
    shot,
    wait_candles,
)

pytestmark = pytest.mark.e2e

HEARTBEAT_SQL = Path(__file__).parent / "flink" / "heartbeat_job.sql"


@pytest.fixture(scope="module")
def seeded(stack):
    """A scratch database with the demo session, and a dashboard serving it."""
    scratch = support.create_scratch_database(stack, prefix="mp_e2e")
    try:
        written = seed.seed(scratch)
        server = Dashboard(scratch, "seeded")
        try:
            yield server, written
        finally:
            server.stop()
    finally:
        support.drop_scratch_database(stack, scratch)


def expected_15min(symbols) -> dict:
    """Cards for the default view: the last 15 one-minute windows of every symbol (datastream)."""
    rows = [r for n, s in enumerate(symbols) for r in seed.window_rows("datastream", s, 60, seed.MINUTES, n)
            if r[3] >= seed.START.replace(minute=45)]
    return {"trades": sum(r[12] for r in rows), "windows": len(rows)}


def test_overview_shows_the_seeded_market(page, seeded):
    server, written = seeded
    page.goto(server.url)
    page.wait_for_selector("#view-overview", state="visible", timeout=TIMEOUT_MS)
    want = expected_15min(written["symbols"])
    page.wait_for_function("t => (document.querySelector('#card-trades-value') || {}).textContent === t",
                           arg=f"{want['trades']:,}", timeout=TIMEOUT_MS)
    assert page.text_content("#card-symbols-value") == "3"
    # Anomalies in the last 15 min of data (14:45-15:00): two on AAPL, one on TSLA.
    assert page.text_content("#card-anomalies-value") == "3"
    rows = page.locator("[data-testid=watch-row]")
    assert [rows.nth(i).get_attribute("data-symbol") for i in range(rows.count())] == ["AAPL", "MSFT", "TSLA"]
    badges = {rows.nth(i).get_attribute("data-symbol"): rows.nth(i).locator(".badge").text_content()
              for i in range(rows.count())}
    assert badges == {"AAPL": "2", "MSFT": "0", "TSLA": "1"}
    label = page.text_content("[data-testid=range-label]")
    assert "last 15 min of data" in label and "2025-03-14 14:45:00 → 2025-03-14 15:00:00 UTC" in label
    assert "historical data" in label
    assert page.is_hidden("[data-testid=banner]")
    shares = page.evaluate("() => document.querySelector('#volume-share-graph .js-plotly-plot')"
                           "._fullData[0].labels.length")
    assert shares == 3
    shot(page, "overview")


def test_candlestick_has_one_candle_per_window_in_range(page, seeded):
    server, written = seeded
    page.goto(server.url)
    open_tab(page, "symbol")
    trace = wait_candles(page, 15, "AAPL")  # 15 min of 60 s windows
    assert trace["markers"] == 2
    page.click("#range-select label:has-text('All')")
    trace = wait_candles(page, written["candles_60"])
    assert trace["markers"] == 4  # every AAPL anomaly
    page.click("#window-select label:has-text('10 s')")
    wait_candles(page, written["candles_10"])
    shot(page, "symbol")


def test_the_sql_indicators_have_their_panels_on_ten_second_bars(page, seeded):
    """With the SQL job's bars (10 s): EMAs, SMA and the HOP average on the price, then RSI, MACD (line,
    signal, histogram) and volatility panels, each trace holding the seeded rows; the forecaster's band and
    points ahead of the last candle (origin + 10 bars), with its errors above the chart."""
    server, written = seeded
    page.goto(server.url + "/symbol/AAPL?range=all&window=10")
    page.wait_for_selector("#view-symbol", state="visible", timeout=TIMEOUT_MS)
    wait_candles(page, written["candles_10"], "AAPL")
    traces = page.evaluate("""() => {
        const gd = document.querySelector('#candles-graph .js-plotly-plot');
        return Object.fromEntries(gd._fullData.map(d => [d.name, [d.yaxis, d._length]]));
    }""")
    bars = written["candles_10"]
    assert traces["EWMA(10)"] == traces["EMA(12)"] == traces["EMA(26)"] == ["y", bars]
    assert traces["HOP avg 60 s / 10 s"] == ["y", bars - 5]  # the first five 10 s slides end no 60 s window
    assert traces["MACD(12, 26, 9)"] == traces["MACD signal"] == traces["MACD histogram"] == ["y4", bars]
    assert traces["volatility(20)"] == ["y5", bars]
    assert traces["RSI"][0] == "y3"
    titles = page.evaluate("() => Array.from(document.querySelectorAll('#candles-graph .annotation-text'))"
                           ".map(a => a.textContent)")
    assert any(title.startswith("MACD(12, 26, 9)") for title in titles), titles
    ahead = seed.FORECAST_BARS + 1  # the origin's close, then one point per bar
    assert traces["ARIMA forecast ARIMA(0,1,0)"] == traces["95% interval"] == ["y", ahead]
    assert traces["Linear trend forecast"] == ["y", ahead]
    line = page.inner_text("[data-testid=symbol-forecast]")
    assert "ARIMA: MAPE 0.146 %, MAE 0.310, 93% in the interval (120 forecasts)" in line, line
    assert "Linear trend: MAPE 0.198 %, MAE 0.420, 88% in the interval (120 forecasts)" in line, line
    shot(page, "symbol-indicators")


def test_selecting_another_symbol_updates_the_chart(page, seeded):
    server, _ = seeded
    page.goto(server.url)
    open_tab(page, "symbol")
    before = wait_candles(page, 15, "AAPL")
    choose(page, "symbol-select", "TSLA")
    after = wait_candles(page, 15, "TSLA")
    tsla = seed.window_rows("datastream", "TSLA", 60, seed.MINUTES, 2)
    assert after["close"] == pytest.approx([r[8] for r in tsla[-15:]])
    assert after["close"] != before["close"]
    assert after["markers"] == 1


def test_watchlist_row_opens_the_symbol_view(page, seeded):
    server, _ = seeded
    page.goto(server.url)
    page.click("[data-testid=watch-row][data-symbol=MSFT]", timeout=TIMEOUT_MS)
    page.wait_for_selector("#view-symbol", state="visible", timeout=TIMEOUT_MS)
    wait_candles(page, 15, "MSFT")


def test_anomalies_table_filters_and_click_through(page, seeded):
    server, written = seeded
    page.goto(server.url)
    page.click("#range-select label:has-text('All')")
    open_tab(page, "anomalies")
    rows = page.locator("[data-testid=anomaly-row]")

    def wait_rows(count):
        page.wait_for_function("n => document.querySelectorAll('[data-testid=anomaly-row]').length === n",
                               arg=count, timeout=TIMEOUT_MS)
        return [(rows.nth(i).get_attribute("data-symbol"), rows.nth(i).get_attribute("data-rule"))
                for i in range(rows.count())]

    assert len(wait_rows(len(written["anomalies"]))) == 6
    assert "6 in range" in page.text_content("[data-testid=anomaly-count]")
    choose(page, "anomaly-rule-filter", "price_jump")
    page.wait_for_function("() => (document.querySelector('[data-testid=anomaly-count]')"
                           " || {textContent: ''}).textContent.startsWith('2 in range')", timeout=TIMEOUT_MS)
    assert wait_rows(2) == [("AAPL", "price_jump"), ("TSLA", "price_jump")]  # newest first: 14:42, 14:38
    choose(page, "anomaly-symbol-filter", "TSLA")
    assert wait_rows(1) == [("TSLA", "price_jump")]
    bars = page.evaluate("() => document.querySelector('#anomaly-timeline-graph .js-plotly-plot')._fullData"
                         ".reduce((n, t) => n + Array.from(t.y).reduce((a, b) => a + b, 0), 0)")
    assert bars == 1
    shot(page, "anomalies")
    rows.first.click()
    page.wait_for_selector("#view-symbol", state="visible", timeout=TIMEOUT_MS)
    wait_candles(page, 30, "TSLA")  # range "All" still applies


def test_a_shared_url_opens_the_same_view_and_survives_reload(page, seeded):
    server, _ = seeded
    page.goto(f"{server.url}/symbol/TSLA?range=all")
    page.wait_for_selector("#view-symbol", state="visible", timeout=TIMEOUT_MS)
    wait_candles(page, 30, "TSLA")
    page.goto(f"{server.url}/anomalies?rule=price_jump&range=all")
    page.wait_for_selector("#view-anomalies", state="visible", timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=anomaly-row]').length === 2",
                           timeout=TIMEOUT_MS)
    choose(page, "anomaly-symbol-filter", "AAPL")  # the filter goes into the URL ...
    page.wait_for_function("() => location.search.includes('symbol=AAPL')", timeout=TIMEOUT_MS)
    assert page.evaluate("() => location.pathname + location.search") == (
        "/anomalies?rule=price_jump&symbol=AAPL&range=all")
    page.reload()  # ... and a reload shows the same rows
    page.wait_for_selector("#view-anomalies", state="visible", timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=anomaly-row]').length === 1",
                           timeout=TIMEOUT_MS)
    assert page.get_attribute("[data-testid=anomaly-row]", "data-symbol") == "AAPL"
    page.locator("[data-testid=anomaly-row]").first.click()  # a row click opens /symbol/AAPL
    page.wait_for_function("() => location.pathname === '/symbol/AAPL'", timeout=TIMEOUT_MS)
    wait_candles(page, 30, "AAPL")
    page.go_back()  # and Back returns to the filtered anomalies
    page.wait_for_selector("#view-anomalies", state="visible", timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=anomaly-row]').length === 1",
                           timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def heartbeat_job(stack):
    """A tiny unbounded job on the shared cluster (datagen -> blackhole), cancelled afterwards."""
    from stack.sql import run_sql_script

    name = f"dashboard-e2e-heartbeat-{uuid.uuid4().hex[:6]}"
    result = run_sql_script(stack, str(HEARTBEAT_SQL), variables={"job_name": name}, capture=True)
    match = re.search(r"Job ID: ([0-9a-f]{32})", result.stdout + result.stderr)
    assert match, f"no job id from sql-client:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    job_id = match.group(1)
    try:
        # On a busy shared cluster (no free slot) the job may go RUNNING -> RESTARTING; the test only needs
        # it listed, since it checks that the panel shows exactly what Flink's REST API says.
        support.wait_for(lambda: support.flink_rest(stack, f"/jobs/{job_id}")["state"] in
                         ("RUNNING", "RESTARTING", "CREATED", "INITIALIZING"), 60, f"job {name} submitted")
        yield job_id, name
    finally:
        support.cancel_job(stack, job_id)


def test_health_panel_lists_exactly_the_jobs_flink_lists(page, seeded, heartbeat_job, stack):
    server, _ = seeded
    job_id, name = heartbeat_job
    page.goto(server.url)
    open_tab(page, "health")
    page.wait_for_selector(f"[data-testid=job-row][data-job-id='{job_id}']", timeout=TIMEOUT_MS)
    assert name in page.text_content(f"[data-testid=job-row][data-job-id='{job_id}']")

    def same_as_rest():
        rest = {job["jid"]: job["state"] for job in support.flink_jobs(stack)}
        shown = page.evaluate("() => Object.fromEntries(Array.from(document.querySelectorAll("
                              "'[data-testid=job-row]')).map(r => [r.dataset.jobId, r.dataset.state]))")
        return shown if shown == rest else None

    support.wait_for(same_as_rest, 20, "the health panel to show exactly /jobs/overview", interval=0.5)
    assert page.get_attribute("[data-testid=flink-ui-link]", "href") == stack.flink.rest_url
    assert page.text_content("[data-testid=pipeline-late_trades-total]") == "3"
    assert page.text_content("[data-testid=pipeline-dead_letters-total]") == "2"
    shot(page, "health")


def test_detection_quality_scores_the_seeded_anomalies_against_their_labels(page, seeded):
    """Expected figures worked out by hand from seed.ANOMALIES and seed.LABELS (range All): price_zscore
    flags t0, t3, t5, none injected; price_jump flags t1 and t4, both injected, of the three price labels
    (t1, t4, missed); volume_zscore flags t2, the one volume label; 'any' flags six trades, three injected,
    of four labels. Detected 1.5 s after the event. The seed has no scored windows: the multivariate row
    found nothing, so it has no precision and recall 0 of every injected kind."""
    server, _ = seeded
    page.goto(f"{server.url}/quality?range=all")
    page.wait_for_selector("#view-quality", state="visible", timeout=TIMEOUT_MS)
    # The figures of the whole range (the first render can be of the default range, before the URL's).
    page.wait_for_function("() => document.querySelectorAll('[data-testid=quality-row]').length === 5 && "
                           "(document.querySelector('[data-testid=quality-summary]') || {textContent: ''})"
                           ".textContent.startsWith('4 injected anomalies')", timeout=TIMEOUT_MS)
    cells = page.evaluate("() => Array.from(document.querySelectorAll('[data-testid=quality-row]'))"
                          ".map(r => Array.from(r.cells).map(c => c.textContent))")
    assert cells == [
        ["price_zscore", "3", "0.000", "0.000", "—", "—", "0.000", "0.000", "—"],
        ["price_jump", "2", "1.000", "0.667", "0.800", "1,500 ms", "0.500", "1.000", "—"],
        ["volume_zscore", "1", "1.000", "1.000", "1.000", "1,500 ms", "—", "—", "1.000"],
        ["any", "6", "0.500", "0.750", "0.600", "1,500 ms", "0.500", "1.000", "1.000"],
        ["multivariate", "0", "—", "0.000", "—", "—", "0.000", "0.000", "0.000"],
    ]
    assert page.text_content("[data-testid=quality-summary]").startswith(
        "4 injected anomalies (price_spike 2, price_crash 1, volume_spike 1) · 6 anomaly rows")
    shot(page, "quality")


def test_a_closed_market_is_said_instead_of_leaving_the_charts_unexplained(page, seeded):
    server, _ = seeded
    with support.pg_connect(server.settings) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO market_status (source, exchange, is_open, next_open, next_close) VALUES "
                    "('yahoo', 'XNYS', false, '2026-11-23 14:30+00', '2026-11-23 21:00+00')")
    try:
        page.goto(server.url)
        banner = page.locator("[data-testid=banner]")
        banner.wait_for(state="visible", timeout=TIMEOUT_MS)
        assert banner.get_attribute("class") == "banner info"
        assert banner.text_content() == (
            "Market closed. XNYS is closed; the live source (yahoo) sends nothing until it opens at "
            "2026-11-23 14:30:00 UTC. Relative to 'latest data' the charts show the last session.")
        page.wait_for_selector("[data-testid=watch-row]", timeout=TIMEOUT_MS)  # the last session is shown
        shot(page, "market-closed")
    finally:
        with support.pg_connect(server.settings) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM market_status")


def test_a_fifty_percent_spike_leaves_the_candles_readable(page, scratch_db):
    """A +50 % trade in one AAPL minute (its window's high, and a price_jump at that price): the price axis
    stays on the other candles' range, the spike's marker sits on the top edge with its price in the
    hover, and the candles still show their moves."""
    seed.seed(scratch_db)
    at = seed.START + timedelta(minutes=17)
    with closing(support.pg_connect(scratch_db)) as conn, conn, conn.cursor() as cur:
        cur.execute("UPDATE window_metrics SET high = high * 1.5, max_price = high * 1.5 "
                    "WHERE symbol = 'AAPL' AND engine = 'datastream' AND window_seconds = 60 "
                    "AND window_start = %s RETURNING high", (at,))
        spike = cur.fetchone()[0]
        cur.execute("INSERT INTO anomalies VALUES ('spike', 'price_jump', 'AAPL', %s, %s, 40, 0.5, %s, 0.4, "
                    "%s)", (at + timedelta(seconds=30), spike, spike / 1.5, at + timedelta(seconds=31)))
    server = Dashboard(scratch_db, "spike")
    try:
        page.goto(server.url + "/symbol/AAPL?range=all")
        wait_candles(page, seed.MINUTES, "AAPL")
        chart = page.evaluate("""() => {
            const gd = document.querySelector('#candles-graph .js-plotly-plot');
            const jump = gd._fullData.find(d => d.name === 'Anomaly: price_jump');
            const jumps = Array.from(jump.y).map((y, i) => [y, jump.customdata[i][2], jump.marker.symbol[i]]);
            return {range: gd._fullLayout.yaxis.range, jumps: jumps};
        }""")
        low, high = chart["range"]
        calm = seed.window_rows("datastream", "AAPL", 60, seed.MINUTES, 0)
        assert low < min(r[7] for r in calm) and high < spike / 1.3  # fitted to the calm candles
        assert high > max(r[6] for r in calm)
        on_edge = [j for j in chart["jumps"] if j[1] == pytest.approx(spike)]
        assert on_edge == [[pytest.approx(high), pytest.approx(spike), "triangle-up"]]
        shot(page, "symbol-spike")
    finally:
        page.goto("about:blank")
        server.stop()


def test_empty_database_shows_a_banner_then_recovers_when_data_arrives(page, scratch_db):
    server = Dashboard(scratch_db, "empty")
    try:
        page.goto(server.url)
        banner = page.locator("[data-testid=banner]")
        banner.wait_for(state="visible", timeout=TIMEOUT_MS)
        assert "No data yet" in banner.text_content()
        page.wait_for_function("() => document.querySelector('#card-trades-value').textContent === '0'",
                               timeout=TIMEOUT_MS)
        assert page.is_visible("[data-testid=watchlist-empty]")
        shot(page, "empty")
        seed.seed(scratch_db)  # data arrives: the page recovers by itself on the next refresh
        banner.wait_for(state="hidden", timeout=TIMEOUT_MS)
        page.wait_for_function("() => document.querySelectorAll('[data-testid=watch-row]').length === 3",
                               timeout=TIMEOUT_MS)
    finally:
        # Leave the page first: a refresh against a stopped server is a 'Failed to fetch' page error.
        page.goto("about:blank")
        server.stop()


def test_unreachable_database_shows_a_banner_not_a_traceback(page, scratch_db):
    down = copy.deepcopy(scratch_db)
    down.postgres.port = free_port()  # nothing listens there
    server = Dashboard(down, "unreachable")
    try:
        page.goto(server.url)
        banner = page.locator("[data-testid=banner]")
        banner.wait_for(state="visible", timeout=TIMEOUT_MS)
        assert "Database unreachable" in banner.text_content()
        page.wait_for_selector("[data-testid=watchlist-empty]", timeout=TIMEOUT_MS)
        assert page.text_content("#card-trades-value") == "—"
        assert "PostgreSQL ✗" in page.text_content("[data-testid=pill-db]")
        time.sleep(1.5)  # a refresh or two: still a banner, no error
        assert "Database unreachable" in banner.text_content()
        shot(page, "unreachable")
    finally:
        # Leave the page first: a refresh against a stopped server is a 'Failed to fetch' page error.
        page.goto("about:blank")
        server.stop()
