"""Differential check: the Flink SQL script (sql/window_metrics.sql, engine 'sql') and the PyFlink DataStream
job (jobs/market_metrics.py, engine 'datastream') write the same window_metrics rows for the same input.

Both jobs read one seeded stream (bad records and anomalies included, no generator delays) from a topic of
the test's own into one scratch database, the way `make` submits them (`python -m stack sql ...` and
`python -m stack flink run -d -py jobs/market_metrics.py` with MARKETPULSE_* overrides). The run follows the
three phases of test_sql_scripts.py: the first windows of BOTH jobs are written before the deliberately late
trades go out, so each engine must route exactly those to late_trades; then flush trades fire every window.
Counts, volumes and the selected prices (open/high/low/close/min/max) must be identical; the sums and the
standard deviation, computed in different orders and ways, to 1e-9 relative. Both must also equal the
independent reference (tests/reference.py).
"""

from __future__ import annotations

import pytest

from tests import support
from tests.pipeline import (
    EXACT_COLUMNS,
    RESULT_TIMEOUT,
    WINDOW_COLUMNS,
    close_enough,
    engine_windows,
    epoch_ms,
    flush_trades,
    generate,
    late_trades_for,
    reference_for,
    send,
    submit_datastream,
    submit_sql,
    wait_for_slots,
    window_differences,
)

pytestmark = pytest.mark.integration

# The DataStream job runs one source subtask per partition (PARTITIONS slots with slot sharing) and the SQL
# job one slot; two partitions keep the pair within a shared 8-slot cluster that other tests also use.
PARTITIONS = 2
ENGINES = ("sql", "datastream")


def test_sql_and_datastream_windows_are_identical(stack, kafka_topic, scratch_db, jobs, tmp_path):
    settings = stack
    sizes = (settings.windows.size_seconds, settings.windows.short_size_seconds)
    topic = kafka_topic("agree.trades", partitions=PARTITIONS)
    injected_topic = kafka_topic("agree.injected")
    stream = generate(topic, injected_topic, tmp_path, "--seed", "21", "--count", "8000",
                      "--event-rate", "20", "--bad-fraction", "0.01", "--anomaly-rate", "0.01")
    anomalies_topic = kafka_topic("agree.anomalies")
    wait_for_slots(settings, PARTITIONS + 1)

    jobs.append(submit_sql(settings, scratch_db, topic, "sql/window_metrics.sql", injected_topic))
    jobs.append(submit_datastream(settings, scratch_db, topic, anomalies_topic))

    def first_windows():
        for job_id in jobs:
            state = support.flink_rest(settings, f"/jobs/{job_id}")["state"]
            assert state == "RUNNING", f"{job_id} {state}:\n{support.job_exceptions(settings, job_id)}"
        counts = dict(support.query(scratch_db, "SELECT engine, count(*) FROM window_metrics "
                                                "WHERE window_seconds = %s GROUP BY engine", (sizes[0],)))
        return all(counts.get(engine) for engine in ENGINES)

    support.wait_for(first_windows, RESULT_TIMEOUT, "the first windows of both engines", interval=1)
    late = late_trades_for(stream)
    send(settings, topic, late)
    send(settings, topic, flush_trades(stream, PARTITIONS),
         partition_of=lambda trade: int(trade.trade_id[-1]))

    expected = reference_for(stream.valid, sizes)

    want = {key: row["trade_count"] for key, row in expected.items()}

    def count_differences(rows: dict) -> dict:
        counts = {key: row["trade_count"] for key, row in rows.items()}
        return {key: (counts.get(key), want.get(key)) for key in set(counts) | set(want)
                if counts.get(key) != want.get(key)}

    def settled():
        got = {engine: engine_windows(scratch_db, engine) for engine in ENGINES}
        return got if not any(count_differences(rows) for rows in got.values()) else None

    try:
        got = support.wait_for(settled, RESULT_TIMEOUT, "both engines' windows = the reference", interval=2)
    except AssertionError:
        for engine in ENGINES:
            wrong = sorted(count_differences(engine_windows(scratch_db, engine)).items())
            print(f"{engine}: {len(wrong)} windows whose (got, reference) trade counts differ: {wrong[:10]}")
        raise

    differences = []
    for key, sql_row in got["sql"].items():
        datastream_row = got["datastream"][key]
        for column in WINDOW_COLUMNS:
            same = (sql_row[column] == datastream_row[column] if column in EXACT_COLUMNS
                    else close_enough(sql_row[column], datastream_row[column]))
            if not same:
                differences.append((key, column, sql_row[column], datastream_row[column]))
    assert not differences, differences[:20]
    assert set(got["sql"]) == set(got["datastream"]) == set(expected)
    # And each equals the independent reference in every column, not only in its trade counts.
    for engine in ENGINES:
        missing, extra, different = window_differences(got[engine], expected)
        assert not (missing or extra or different), (engine, missing[:5], extra[:5], different[:5])
    assert {size for _symbol, size, _start in got["sql"]} == set(sizes)

    # The deliberately late trades: in late_trades for both engines, in no window of either. Each sink
    # flushes on its own 1 s timer, so the late rows may land a moment after the last window rows.
    late_ids = {trade.trade_id for trade in late}

    def late_rows(engine: str) -> set[str]:
        rows = support.query(scratch_db, "SELECT trade_id FROM late_trades WHERE engine = %s", (engine,))
        return {row[0] for row in rows}

    for engine in ENGINES:
        support.wait_for(lambda engine=engine: late_rows(engine) >= late_ids, 30,
                         f"{engine}'s late_trades rows")
        assert late_rows(engine) == late_ids, engine  # no lateness in the stream itself

    # The ground truth rides along in the SQL job: every label of the stream, once, in injected_labels.
    want_labels = {(label["trade_id"], label["kind"], label["symbol"], label["event_time"])
                   for label in stream.labels if label.get("trade_id") and label.get("kind")}

    def labels():
        rows = support.query(scratch_db, f"SELECT trade_id, kind, symbol, {epoch_ms('event_time')} "
                                         "FROM injected_labels")
        return set(rows) if len(rows) >= len(want_labels) else None

    assert support.wait_for(labels, 60, "injected_labels") == want_labels
    assert {kind for _id, kind, _symbol, _time in want_labels} >= {"price_spike", "bad"}
