"""The foundation, proven on the real processes: Kafka round trip, the Postgres schema, a PyFlink
DataStream job and a Flink SQL script on the session cluster, each writing rows into Postgres that are
asserted one by one."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import closing

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from marketpulse.trade import Trade
from stack import prometheus
from tests import support

pytestmark = pytest.mark.integration

PROBE_JOB = "tests/integration/flink/kafka_to_postgres_job.py"
PROBE_SQL = "tests/integration/flink/kafka_to_postgres.sql"


def probe_trades(prefix: str, count: int) -> list[Trade]:
    return [Trade(f"{prefix}-{i}", ("AAPL", "MSFT", "NVDA")[i % 3], round(100 + i * 0.25, 2), 10 + i,
                  "BUY" if i % 2 else "SELL", 1_735_828_200_000 + i * 1000) for i in range(count)]


def fill_probe_topic(settings, topic: str, trades: list[Trade]) -> None:
    records = [(t.symbol.encode(), t.to_json().encode()) for t in trades]
    records.append((b"BAD", b'{"trade_id": "truncated'))  # must be skipped, not kill the job
    support.produce(settings, topic, records)


def create_probe_table(settings) -> str:
    table = support.unique_name("probe")
    support.query(settings, f"CREATE TABLE {table} (trade_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, "
                            "price DOUBLE PRECISION NOT NULL, size BIGINT NOT NULL)")
    return table


def test_kafka_round_trip(stack, kafka_topic):
    topic = kafka_topic("roundtrip", partitions=4)
    sent = [(f"K{i % 5}".encode(), f"message-{i}".encode()) for i in range(200)]
    producer = KafkaProducer(bootstrap_servers=stack.kafka.bootstrap_servers, acks="all")
    metadata = [producer.send(topic, key=k, value=v).get(timeout=30) for k, v in sent]
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=stack.kafka.bootstrap_servers, enable_auto_commit=False,
                             consumer_timeout_ms=10_000)
    partitions = [TopicPartition(topic, p) for p in range(4)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    received = []
    for message in consumer:
        received.append(message)
        if len(received) == len(sent):
            break
    consumer.close()

    assert sorted((m.key, m.value) for m in received) == sorted(sent)
    # A key always lands in one partition, the one the producer reported.
    partition_of = {}
    for (key, _), meta in zip(sent, metadata, strict=True):
        assert partition_of.setdefault(key, meta.partition) == meta.partition
    assert {m.key: m.partition for m in received} == partition_of


def test_pipeline_topics_exist_with_configured_partitions(stack):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=stack.kafka.bootstrap_servers)
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}
    finally:
        admin.close()
    assert described[stack.kafka.trades_topic] == stack.kafka.trades_partitions
    assert described[stack.kafka.anomalies_topic] == stack.kafka.anomalies_partitions
    assert described[stack.kafka.injected_topic] == stack.kafka.injected_partitions


def test_postgres_schema_write_and_read(stack, pg):
    versions = support.query(stack, "SELECT version FROM schema_migrations ORDER BY version")
    assert versions[0] == ("001_core.sql",)
    with pg.cursor() as cur:
        cur.execute("BEGIN")
        insert = ("INSERT INTO dead_letters (engine, topic, kafka_partition, kafka_offset, payload_sha1, "
                  "payload, reason, received_at) "
                  "VALUES ('test', 'trades', 0, 7, 'abc', %s, %s, '2025-01-02T14:30:00Z') ")
        cur.execute(insert, (b"{oops\x00\xff", "malformed JSON"))
        # The primary key (engine, topic, partition, offset) is the upsert key: writing the same Kafka record
        # again changes nothing. Any bytes are storable; the table keeps the first 64 KiB and the full length.
        cur.execute(insert + "ON CONFLICT (engine, topic, kafka_partition, kafka_offset) DO UPDATE SET "
                    "reason = EXCLUDED.reason", (b"{oops\x00\xff", "malformed JSON"))
        cur.execute(insert.replace("7", "8"), (b"x" * 70000, "value too large"))
        cur.execute("SELECT kafka_offset, payload, payload_length, reason, extract(epoch FROM received_at) "
                    "FROM dead_letters WHERE engine = 'test' ORDER BY kafka_offset")
        assert [(offset, bytes(payload), *rest) for offset, payload, *rest in cur.fetchall()] == [
            (7, b"{oops\x00\xff", 7, "malformed JSON", 1735828200),
            (8, b"x" * 65536, 70000, "value too large", 1735828200)]
        cur.execute("ROLLBACK")


def test_datastream_job_kafka_to_postgres_on_cluster(stack, kafka_topic):
    topic = kafka_topic("probe_ds", partitions=2)
    trades = probe_trades("ds", 25)
    fill_probe_topic(stack, topic, trades)
    table = create_probe_table(stack)
    try:
        result = support.flink_run("-py", PROBE_JOB, "--topic", topic, "--table", table, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
        job_id = support.job_id_from_output(result.stdout)

        rows = support.query(stack, f"SELECT trade_id, symbol, price, size FROM {table} ORDER BY trade_id")
        assert rows == sorted((t.trade_id, t.symbol, t.price, t.size) for t in trades)
        # The job is known to the cluster's REST API, finished (the source is bounded).
        jobs = {job["jid"]: job for job in support.flink_jobs(stack)}
        assert jobs[job_id]["state"] == "FINISHED"
    finally:
        support.query(stack, f"DROP TABLE IF EXISTS {table}")


def test_sql_script_kafka_to_postgres_on_cluster(stack, kafka_topic):
    from stack.sql import run_sql_script

    topic = kafka_topic("probe_sql", partitions=2)
    trades = probe_trades("sql", 30)
    fill_probe_topic(stack, topic, trades)
    table = create_probe_table(stack)
    try:
        before = {job["jid"] for job in support.flink_jobs(stack)}
        result = run_sql_script(stack, PROBE_SQL, variables={"topic": topic, "table": table}, capture=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        assert "[ERROR]" not in result.stdout, result.stdout[-3000:]

        rows = support.query(stack, f"SELECT trade_id, symbol, price, size FROM {table} ORDER BY trade_id")
        assert rows == sorted((t.trade_id, t.symbol, t.price, t.size) for t in trades)
        new_jobs = [job for job in support.flink_jobs(stack) if job["jid"] not in before]
        assert [(job["name"], job["state"]) for job in new_jobs] == [("marketpulse-probe-sql", "FINISHED")]
    finally:
        support.query(stack, f"DROP TABLE IF EXISTS {table}")


def test_status_reports_every_component_up(stack):
    result = subprocess.run([sys.executable, "-m", "stack", "status"], cwd=support.REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["component", "address", "health", "detail"]
    health_rows = lines[1:lines.index("")] if "" in lines else lines[1:]  # the supervisor's table follows
    table = {line[:15].strip(): line[15:].split()[:2] for line in health_rows}
    assert table == {
        "PostgreSQL": [f"{stack.postgres.host}:{stack.postgres.port}", "up"],
        "Kafka (KRaft)": [stack.kafka.bootstrap_servers, "up"],
        "Flink": [stack.flink.rest_url, "up"],
        "SQL Gateway": [stack.flink.sql_gateway_url, "up"],
        "Prometheus": [prometheus.url(stack), "up"],
    }


def test_up_when_already_up_is_a_no_op(stack):
    result = subprocess.run([sys.executable, "-m", "stack", "up"], cwd=support.REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "stack already up, nothing to do" in result.stderr
    assert "starting" not in result.stderr


def test_json_of_probe_is_the_trade_contract():
    # The probe data above is built with the same Trade type the generator writes.
    record = json.loads(probe_trades("x", 1)[0].to_json())
    assert set(record) == {"trade_id", "symbol", "price", "size", "side", "event_time"}


def test_kafka_consumer_closes_cleanly(stack):
    with closing(KafkaConsumer(bootstrap_servers=stack.kafka.bootstrap_servers)) as consumer:
        assert stack.kafka.trades_topic in consumer.topics()
