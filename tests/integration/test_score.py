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


def label(kind: str, trade_id: str, event_time: int) -> tuple[bytes, bytes]:
    record = {"kind": kind, "trade_id": trade_id, "symbol": "AAPL", "event_time": event_time, "magnitude": 1}
    return b"AAPL", json.dumps(record).encode()


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
    table = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[2:-1]}
    # found, precision, recall, F1, delay, then recall per kind (price_spike, price_crash, volume_spike)
    assert table["price_zscore"] == ["2", "0.500", "0.500", "0.500", "250", "1.000", "0.000", "-"]
    assert table["volume_zscore"] == ["1", "1.000", "1.000", "1.000", "400", "-", "-", "1.000"]
    assert table["any"][:2] == ["3", "0.667"]
    assert result.stdout.splitlines()[0].startswith("4 anomaly rows")

    # [T0 + 1 s, T0 + 3 s): only c1 and v1 are labels there, only v1 a detection.
    ranged = run_score(scratch_db, topic, "--from", str(T0 + 1000), "--to", "2025-01-02T14:30:03")
    assert ranged.returncode == 0, ranged.stderr
    assert "1 anomaly rows" in ranged.stdout and "2 injected anomalies" in ranged.stdout

    sql = run_score(scratch_db, topic, "--engine", "sql")
    assert sql.returncode == 0, sql.stderr
    assert sql.stdout.splitlines()[0].startswith("1 anomaly rows of engine sql")
    table = {line.split()[0]: line.split()[1:] for line in sql.stdout.splitlines()[2:-1]}
    assert table["price_zscore"] == ["1", "1.000", "0.500", "0.667", "2500", "1.000", "0.000", "-"]


def test_a_missing_topic_is_one_clear_line(stack, scratch_db):
    result = run_score(scratch_db, support.unique_name("score.nothing"))
    assert result.returncode == 1
    assert result.stderr.startswith("score: topic ") and "not found" in result.stderr
    assert "Traceback" not in result.stderr
