"""The generator against the real broker: a seeded run lands in Kafka exactly as the file output says, every
symbol in the partition Kafka's default partitioner (murmur2) gives its key, with the ground truth on its own
topic. Topics are unique to the test run and deleted afterwards."""

import collections
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from marketpulse.config import load_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
COUNT = 5000
OPTIONS = ["--seed", "31", "--count", str(COUNT), "--rate", "0", "--universe", "12",
           "--anomaly-rate", "0.01", "--late-fraction", "0.02", "--max-delay-ms", "2000",
           "--bad-fraction", "0.01"]


def _partition_of(key: bytes) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % PARTITIONS


def _admin(bootstrap: str) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(bootstrap_servers=bootstrap.split(","), bootstrap_timeout_ms=10_000,
                                client_id="test-generator-kafka")
    except KafkaError as err:
        # A failure, not a skip: the `stack` fixture is there to bring the broker up.
        pytest.fail(f"Kafka broker not reachable at {bootstrap} ({type(err).__name__}: {err}); "
                    f"the `stack` fixture should have started it", pytrace=False)


def _generate(names, *extra):
    return subprocess.run(
        [sys.executable, "-m", "generator", *OPTIONS, "--topic", names["trades"],
         "--injected-topic", names["injected"], "--reference-topic", names["reference"], "--quiet", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=300)


def _consume(bootstrap, topic, partitions, expected, timeout_s=60):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False,
                             group_id=None, client_id="test-generator-kafka")
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
        # One more poll: nothing beyond the expected count may be there.
        for batch in consumer.poll(timeout_ms=1000).values():
            records.extend(batch)
        return records
    finally:
        consumer.close()


def test_seeded_run_lands_in_kafka_exactly_partitioned_by_symbol(stack, tmp_path):
    bootstrap = load_settings().kafka.bootstrap_servers
    admin = _admin(bootstrap)
    base = f"test.generator.{uuid.uuid4().hex[:10]}"
    names = {"trades": f"{base}.trades", "injected": f"{base}.injected", "reference": f"{base}.symbols"}
    admin.create_topics([NewTopic(names["trades"], PARTITIONS, 1), NewTopic(names["injected"], 1, 1),
                         NewTopic(names["reference"], 1, 1)])
    try:
        _check_run(bootstrap, names, tmp_path)
    finally:
        admin.delete_topics(list(names.values()))
        admin.close()


def _check_run(bootstrap, names, tmp_path):
    produced = _generate(names)
    assert produced.returncode == 0, produced.stderr

    # The same options to a file: the expected messages, byte for byte.
    out = tmp_path / "expected.tsv"
    to_file = _generate(names, "--output", str(out))
    assert to_file.returncode == 0, to_file.stderr
    expected = collections.defaultdict(list)
    for line in out.read_bytes().splitlines():
        topic, key, value = line.split(b"\t")
        expected[topic.decode()].append((key, value))
    assert len(expected[names["trades"]]) == COUNT

    trades = _consume(bootstrap, names["trades"], PARTITIONS, COUNT)
    assert len(trades) == COUNT
    got = collections.Counter((r.key, r.value) for r in trades)
    assert got == collections.Counter(expected[names["trades"]])

    partition_of_symbol = {}
    for record in trades:
        assert record.partition == _partition_of(record.key), record.key
        assert partition_of_symbol.setdefault(record.key, record.partition) == record.partition
    assert len(partition_of_symbol) == 12
    assert len(set(partition_of_symbol.values())) > 1  # the symbols are spread over the partitions
    # Within a partition, Kafka keeps the generator's order (idempotent producer).
    for p in range(PARTITIONS):
        got = [(r.key, r.value) for r in sorted(trades, key=lambda r: r.offset) if r.partition == p]
        assert got == [kv for kv in expected[names["trades"]] if _partition_of(kv[0]) == p]

    injected = _consume(bootstrap, names["injected"], 1, len(expected[names["injected"]]))
    assert [(r.key, r.value) for r in injected] == expected[names["injected"]]
    kinds = collections.Counter(json.loads(r.value)["kind"] for r in injected)
    assert kinds["bad"] > 0 and kinds["late"] > 0 and sum(kinds.values()) == len(injected)

    reference = _consume(bootstrap, names["reference"], 1, 12)
    assert sorted(r.key for r in reference) == sorted(partition_of_symbol)
