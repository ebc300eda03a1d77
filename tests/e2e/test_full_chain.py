"""The whole chain as a user sees it: the seeded generator (price anomalies, late and bad records) → Kafka →
both Flink jobs on the cluster (the PyFlink DataStream job and sql/window_metrics.sql) → PostgreSQL → the
dashboard in headless Chromium.

Asserted: each engine's window rows equal the independent reference (tests/reference.py) over the valid
trades that engine did not route to late_trades; the DataStream job's dead letters are exactly the bad
records; anomaly recall and precision against the generator's ground truth (printed); and the dashboard
draws an injected, detected anomaly as a marker on the right symbol's price chart, at the trade's price."""

from __future__ import annotations

import math

import pytest

from marketpulse.analytics.detector import PRICE_ZSCORE
from marketpulse.analytics.scoring import ANY, score
from marketpulse.config import postgres_dsn
from marketpulse.score import read_detections
from tests import support
from tests.e2e.browser import Dashboard, choose, open_tab, shot, wait_candles
from tests.pipeline import (
    EXACT_COLUMNS,
    RESULT_TIMEOUT,
    WINDOW_COLUMNS,
    close_enough,
    engine_windows,
    flush_trades,
    generate,
    reference_for,
    send,
    submit_datastream,
    submit_sql,
    wait_for_slots,
)

pytestmark = pytest.mark.e2e

PARTITIONS = 4
GENERATOR_OPTIONS = ("--seed", "20261121", "--count", "20000", "--event-rate", "40",
                     "--anomaly-rate", "0.005", "--anomaly-kinds", "price_spike,price_crash,volume_spike",
                     "--late-fraction", "0.01", "--bad-fraction", "0.005")
ENGINES = ("datastream", "sql")


def late_ids(scratch, engine: str) -> set[str]:
    return {row[0] for row in support.query(
        scratch, "SELECT trade_id FROM late_trades WHERE engine = %s", (engine,))}


def expected_windows(stream, scratch, engine: str, sizes) -> dict[tuple, dict]:
    late = late_ids(scratch, engine)
    return reference_for([trade for trade in stream.valid if trade.trade_id not in late], sizes)


def test_generator_to_browser(stack, kafka_topic, scratch_db, jobs, page, tmp_path):
    settings = stack
    sizes = (settings.windows.size_seconds, settings.windows.short_size_seconds)
    topic = kafka_topic("e2e.trades", partitions=PARTITIONS)
    anomalies_topic = kafka_topic("e2e.anomalies")
    stream = generate(topic, kafka_topic("e2e.injected"), tmp_path, *GENERATOR_OPTIONS)

    # Both jobs as `make demo` submits them, pointed at this test's topic and database.
    wait_for_slots(settings, PARTITIONS + 1)
    jobs.append(submit_sql(settings, scratch_db, topic, "sql/window_metrics.sql"))
    jobs.append(submit_datastream(settings, scratch_db, topic, anomalies_topic))
    # One far-later trade per partition moves every watermark past the last real window.
    send(settings, topic, flush_trades(stream, PARTITIONS), partition_of=lambda t: int(t.trade_id[-1]))

    def settled():
        for job_id in jobs:
            state = support.flink_rest(settings, f"/jobs/{job_id}")["state"]
            assert state == "RUNNING", f"{job_id} {state}:\n{support.job_exceptions(settings, job_id)}"
        # Both engines dead-letter every bad record (the SQL job with engine 'sql').
        dead = dict(support.query(scratch_db, "SELECT engine, count(*) FROM dead_letters GROUP BY engine"))
        for engine in ENGINES:
            want = {key: row["trade_count"] for key, row in
                    expected_windows(stream, scratch_db, engine, sizes).items()}
            got = {key: row["trade_count"] for key, row in engine_windows(scratch_db, engine).items()}
            if got != want:
                return None
        return dead == {engine: stream.bad for engine in ENGINES}

    support.wait_for(settled, RESULT_TIMEOUT, "both engines' windows and the dead letters", interval=2)

    # Windows: every column of every row, per engine, against the reference.
    for engine in ENGINES:
        expected = expected_windows(stream, scratch_db, engine, sizes)
        got = engine_windows(scratch_db, engine)
        assert set(got) == set(expected)
        wrong = [(key, column, got[key][column], want[column])
                 for key, want in expected.items() for column in WINDOW_COLUMNS
                 if not (got[key][column] == want[column] if column in EXACT_COLUMNS
                         else close_enough(got[key][column], want[column]))]
        assert not wrong, f"{engine}: {wrong[:10]}"
        late = late_ids(scratch_db, engine)
        assert late <= stream.delayed_ids, f"{engine}: late trades the generator never delayed"
        print(f"\n{engine}: {len(got)} window rows = reference; {len(late)} late trades "
              f"(of {len(stream.delayed_ids)} the generator delayed)")

    # Dead letters: exactly the bad records, each with the generator's reason.
    bad_labels = {label["payload_sha1"]: label["reason"] for label in stream.labels if label["kind"] == "bad"}
    dead_letters = dict(support.query(scratch_db, "SELECT payload_sha1, reason FROM dead_letters "
                                                  "WHERE engine = 'datastream'"))
    assert dead_letters == bad_labels and len(dead_letters) == stream.bad > 0
    print(f"dead letters: {len(dead_letters)} = bad records sent")

    # Anomalies against the ground truth, scored by the product's own code (make score).
    injected_price = {label["trade_id"]: label for label in stream.labels
                      if label["kind"] in ("price_spike", "price_crash")}
    detected = {row[0]: row for row in support.query(
        scratch_db, "SELECT trade_id, symbol, price, (extract(epoch FROM event_time) * 1000)::bigint "
                    "FROM anomalies")}
    # Quality on the generator's trades (the flush trades are the test's own).
    generated = {trade.trade_id for trade in stream.valid}
    rows = read_detections(postgres_dsn(scratch_db, "reader"), None, None)  # what make score reads
    table = score([row for row in rows if row[0] in generated], stream.labels)
    print(f"anomalies: {len(detected)} trades flagged\n{table.render()}")
    flagged = table.rules[ANY]
    price_recall = (flagged.recall["price_spike"] or 0, flagged.recall["price_crash"] or 0)
    assert min(price_recall) >= 0.95 and flagged.precision >= 0.9
    assert table.rules[PRICE_ZSCORE].precision >= 0.9 and table.rules[PRICE_ZSCORE].overall_recall >= 0.9

    # The dashboard draws a detected injected anomaly on its symbol's price chart, at the trade's price.
    trade_id = min(set(detected) & set(injected_price))
    _, symbol, price, _event_time = detected[trade_id]
    assert math.isclose(price, injected_price[trade_id]["price"], rel_tol=1e-12)
    symbol_anomalies = support.query(scratch_db, "SELECT count(*) FROM anomalies WHERE symbol = %s",
                                     (symbol,))[0][0]
    symbol_candles = sum(1 for key in engine_windows(scratch_db, "datastream")
                         if key[0] == symbol and key[1] == sizes[0])
    server = Dashboard(scratch_db, "full-chain")
    try:
        page.goto(server.url)
        page.click("#range-select label:has-text('All')")
        open_tab(page, "symbol")
        choose(page, "symbol-select", symbol)
        wait_candles(page, symbol_candles, symbol)
        # Each marker: where it is drawn and the price it stands for; a spike outside the candles' normal
        # range is drawn on the price axis' edge, with its price in the hover text.
        chart = page.evaluate("""() => {
            const gd = document.querySelector('#candles-graph .js-plotly-plot');
            const markers = gd._fullData.filter(d => (d.name || '').startsWith('Anomaly: '))
                .flatMap(d => Array.from(d.y).map((y, i) => [y, d.customdata[i][2]]));
            return {markers: markers, range: gd._fullLayout.yaxis.range};
        }""")
        assert len(chart["markers"]) == symbol_anomalies
        drawn = [y for y, real in chart["markers"] if math.isclose(real, price, rel_tol=1e-12)]
        low, high = chart["range"]
        assert drawn and all(math.isclose(y, price, rel_tol=1e-12) or y in (low, high) for y in drawn), \
            (price, chart)
        page.wait_for_timeout(500)
        shot(page, "full-chain-symbol")
        print(f"dashboard: {symbol} chart shows {symbol_candles} candles and {len(chart['markers'])} anomaly "
              f"markers, including injected {trade_id} at {price} (drawn at {drawn[0]})")
    finally:
        # Leave the page first: a refresh against a stopped server is a 'Failed to fetch' page error.
        page.goto("about:blank")
        server.stop()
