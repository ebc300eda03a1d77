"""`python -m marketpulse.score` on the real Kafka and PostgreSQL: labels on a topic, anomaly rows in a
scratch database, the printed table's figures, the time range, and one clear line when a source is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import closing

import pytest

from tests import support

pytestmark = pytest.mark.integration

T0 = 1_735_828_200_000


def label(kind: str, trade_id: str, event_time: int, **details) -> tuple[bytes, bytes]:
    record = {"kind": kind, "trade_id": trade_id, "symbol": "AAPL", "event_time": event_time, "magnitude": 1,
              **details}
    return b"AAPL", json.dumps(record).encode()


def table_of(stdout: str) -> dict[str, list[str]]:
    """The printed table's rows by rule: found, precision, recall, F1, delay, then recall per kind."""
    rows = [line.split() for line in stdout.splitlines()]
    return {row[0]: row[1:] for row in rows if row and row[0] in
            ("price_zscore", "price_jump", "volume_zscore", "any", "multivariate")}


def run_score(scratch, topic: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "marketpulse.score", "--topic", topic, *args],
                          cwd=support.REPO, env=support.env_for(scratch), capture_output=True, text=True,
                          timeout=120)


def test_score_joins_the_anomalies_table_with_the_injected_topic(stack, kafka_topic, scratch_db):
    topic = kafka_topic("score.injected")
    support.produce(stack, topic, [label("price_spike", "s1", T0), label("price_crash", "c1", T0 + 1000),
                                   label("volume_spike", "v1", T0 + 2000), label("late", "l1", T0 + 3000),
                                   (b"AAPL", b"not json")])
    rows = [("s1", "price_zscore", T0, T0 + 250), ("s1", "price_jump", T0, T0 + 250),
            ("q1", "price_zscore", T0 + 4000, T0 + 4100), ("v1", "volume_zscore", T0 + 2000, T0 + 2400)]
    with closing(support.pg_connect(scratch_db)) as connection, connection.cursor() as cursor:
        for trade_id, rule, event_time, detected_at in rows:
            cursor.execute("INSERT INTO anomalies (trade_id, rule, symbol, event_time, price, size, "
                           "detected_at) VALUES (%s, %s, 'AAPL', to_timestamp(%s / 1000.0), 100, 1, "
                           "to_timestamp(%s / 1000.0))", (trade_id, rule, event_time, detected_at))
        # The SQL job's z-score rule on the same spike: scored only with --engine sql.
        cursor.execute("INSERT INTO anomalies (engine, trade_id, rule, symbol, event_time, price, size, "
                       "detected_at) VALUES ('sql', 's1', 'price_zscore', 'AAPL', to_timestamp(%s / 1000.0), "
                       "100, 1, to_timestamp(%s / 1000.0))", (T0, T0 + 2500))

    result = run_score(scratch_db, topic)
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    table = table_of(result.stdout)
    # found, precision, recall, F1, delay, then recall per kind (price_spike, price_crash, volume_spike)
    assert table["price_zscore"] == ["2", "0.500", "0.500", "0.500", "250", "1.000", "0.000", "-"]
    assert table["volume_zscore"] == ["1", "1.000", "1.000", "1.000", "400", "-", "-", "1.000"]
    assert table["any"][:2] == ["3", "0.667"]
    assert result.stdout.splitlines()[0].startswith("4 anomaly rows, 0 scored windows (0 anomalous)")
    assert table["multivariate"][:4] == ["0", "-", "0.000", "-"]

    # [T0 + 1 s, T0 + 3 s): only c1 and v1 are labels there, only v1 a detection.
    ranged = run_score(scratch_db, topic, "--from", str(T0 + 1000), "--to", "2025-01-02T14:30:03")
    assert ranged.returncode == 0, ranged.stderr
    assert "1 anomaly rows" in ranged.stdout and "2 injected anomaly labels" in ranged.stdout

    # The SQL job's rows: its z-score rule only, no window detector.
    sql = run_score(scratch_db, topic, "--engine", "sql")
    assert sql.returncode == 0, sql.stderr
    assert sql.stdout.splitlines()[0].startswith("1 anomaly rows of engine sql in database")
    assert table_of(sql.stdout)["price_zscore"] == ["1", "1.000", "0.500", "0.667", "2500", "1.000", "0.000",
                                                    "-"]


def test_score_counts_the_multivariate_windows_against_labels_and_episodes(stack, kafka_topic, scratch_db):
    """Two volume surges (episode a1 of 3 labelled trades, b1 of 2) and a price spike s1; four anomalous
    windows and one ordinary scored window in window_anomalies. By hand: the anomalous [0, 60 s) and
    [60 s, 120 s) hold trades of a1, [120 s, 180 s) holds s1, [240 s, 300 s) nothing; b1 is in the ordinary
    [300 s, 360 s) only."""
    topic = kafka_topic("score.windows")
    surge = "volume_surge_flat"
    support.produce(stack, topic, [
        label(surge, "a1", T0 + 10_000, episode="a1"), label(surge, "a2", T0 + 50_000, episode="a1"),
        label(surge, "a3", T0 + 70_000, episode="a1"), label("price_spike", "s1", T0 + 130_000),
        label(surge, "b1", T0 + 310_000, episode="b1"), label(surge, "b2", T0 + 330_000, episode="b1")])
    windows = [(0, True), (60_000, True), (120_000, True), (240_000, True), (300_000, False)]
    with closing(support.pg_connect(scratch_db)) as connection, connection.cursor() as cursor:
        for start, anomalous in windows:
            cursor.execute("INSERT INTO window_anomalies VALUES ('AAPL', 60, to_timestamp(%s / 1000.0), "
                           "to_timestamp(%s / 1000.0), %s, 30, %s, 'volume +6.00')",
                           (T0 + start, T0 + start + 60_000, 40.0 if anomalous else 3.0, anomalous))
    result = run_score(scratch_db, topic)
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    assert result.stdout.splitlines()[0].startswith("0 anomaly rows, 5 scored windows (4 anomalous)")
    table = table_of(result.stdout)
    # 4 found, 3 true (precision 0.75); a1 and s1 caught of a1, b1, s1 (recall 2/3, a1 once though it is in
    # two windows); F1 = 2 x 0.75 x 0.667 / 1.417; then price_spike 1.000, volume_surge_flat 0.500.
    assert table["multivariate"] == ["4", "0.750", "0.667", "0.706", "-", "1.000", "0.500"]
    # No trade rule flagged a trade of either surge.
    assert table["volume_zscore"][-1] == "0.000"
    assert "volume_surge_flat 2 episodes" in result.stdout


def test_a_missing_topic_is_one_clear_line(stack, scratch_db):
    result = run_score(scratch_db, support.unique_name("score.nothing"))
    assert result.returncode == 1
    assert result.stderr.startswith("score: topic ") and "not found" in result.stderr
    assert "Traceback" not in result.stderr
