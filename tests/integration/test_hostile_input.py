"""Hostile input never stops a job, on either engine: a generated corpus of bad records (every class of
generator/hostile.py: tombstones, empty, non-UTF-8, NUL bytes raw and escaped, lone surrogates, 1 MB values,
deep nesting, numbers out of range, duplicate keys, ... plus mutation-fuzzed trades) goes to the topic while
the DataStream job and the SQL window script run on the shared cluster; then good trades.

Asserted: no job restarts and the TaskManager count unchanged; every bad record is a dead letter of each
engine, exactly once, at its own (partition, offset), with the raw bytes (first 64 KiB), the full length and
SHA-1; the DataStream job's reason is parse_trade's; and the good trades sent afterwards give exactly the
reference windows in both engines (no bad record moved event time or entered a window)."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from generator import hostile
from tests import support
from tests.pipeline import (
    RESULT_TIMEOUT,
    START_MS,
    engine_windows,
    flush_trades,
    generate,
    reference_for,
    send,
    submit_datastream,
    submit_sql,
    wait_for_slots,
    window_differences,
)

pytestmark = pytest.mark.integration

PARTITIONS = 2
ENGINES = ("datastream", "sql")
CORPUS_SIZE = 3000
STORED_BYTES = 65536  # db/schema/005_dead_letters_raw.sql


def taskmanagers(settings) -> int:
    return support.flink_rest(settings, "/overview")["taskmanagers"]


def test_hostile_corpus_is_dead_lettered_and_stops_nothing(stack, kafka_topic, scratch_db, jobs, tmp_path):
    settings = stack
    started = time.monotonic()
    sizes = (settings.windows.size_seconds, settings.windows.short_size_seconds)
    topic = kafka_topic("hostile.trades", partitions=PARTITIONS)
    stream = generate(topic, kafka_topic("hostile.injected"), tmp_path, "--seed", "33", "--count", "2000",
                      "--event-rate", "20", to_kafka=False)
    corpus = hostile.corpus(CORPUS_SIZE, seed=33, base_ms=START_MS)
    wait_for_slots(settings, PARTITIONS + 1)
    managers = taskmanagers(settings)

    # Side by side: each submission spends most of its time starting a client JVM.
    anomalies_topic = kafka_topic("hostile.anomalies")
    with ThreadPoolExecutor(2) as pool:
        submissions = {
            "sql": pool.submit(submit_sql, settings, scratch_db, topic, "sql/window_metrics.sql"),
            # Idleness off: while one partition's subtask writes a burst of large dead letters (seconds on a
            # loaded machine), the idle timeout would let the other partition move event time alone and make
            # this partition's good trades late (README: Delivery guarantees). This test is about bad input.
            "datastream": pool.submit(submit_datastream, settings, scratch_db, topic, anomalies_topic,
                                      windows_idleness_seconds="0")}
        engine_job = {}
        for engine, submission in submissions.items():
            try:
                engine_job[engine] = submission.result()
            except Exception:  # the other one may still start: cancel it too
                for other in submissions.values():
                    if other.exception() is None:
                        jobs.append(other.result())
                raise
    jobs.extend(engine_job.values())
    submitted = time.monotonic()

    # The corpus while both jobs run, then the good trades, then one flush trade per partition.
    coordinates = hostile.send(corpus, settings.kafka.bootstrap_servers, topic)
    by_coordinates = dict(zip(coordinates, corpus, strict=True))
    send(settings, topic, stream.valid)
    send(settings, topic, flush_trades(stream, PARTITIONS),
         partition_of=lambda trade: int(trade.trade_id[-1]))

    def dead_letters(engine: str) -> dict[tuple, tuple]:
        rows = support.query(scratch_db, "SELECT kafka_partition, kafka_offset, payload, payload_length, "
                                         "payload_sha1, reason, topic FROM dead_letters WHERE engine = %s",
                             (engine,))
        return {(row[0], row[1]): row[2:] for row in rows}

    expected = reference_for(stream.valid, sizes)

    def settled():
        for engine, job_id in engine_job.items():
            state = support.flink_rest(settings, f"/jobs/{job_id}")["state"]
            assert state == "RUNNING", f"{engine} job {state}:\n{support.job_exceptions(settings, job_id)}"
        done = all(len(dead_letters(engine)) >= len(corpus) for engine in ENGINES)
        counts = {engine: {key: row["trade_count"] for key, row in engine_windows(scratch_db, engine).items()}
                  for engine in ENGINES}
        want = {key: row["trade_count"] for key, row in expected.items()}
        return done and all(got == want for got in counts.values())

    try:
        support.wait_for(settled, RESULT_TIMEOUT, "every dead letter and the reference windows", interval=2)
    finally:
        sent = Counter(record.klass for record in corpus)
        dead = {engine: dead_letters(engine) for engine in ENGINES}
        print(f"\nhostile corpus: {len(corpus)} records in {len(sent)} classes, "
              f"{sum(len(r.value or b'') for r in corpus) / 1e6:.1f} MB")
        print(f"{'class':28s} {'sent':>5s} {'dead(datastream)':>17s} {'dead(sql)':>10s}")
        for klass in sorted(sent):
            per_engine = [sum(1 for key in dead[engine] if key in by_coordinates
                              and by_coordinates[key].klass == klass) for engine in ENGINES]
            print(f"{klass:28s} {sent[klass]:5d} {per_engine[0]:17d} {per_engine[1]:10d}")
        for engine in ENGINES:
            missing, extra, different = window_differences(engine_windows(scratch_db, engine), expected)
            late = support.query(scratch_db, "SELECT count(*) FROM late_trades WHERE engine = %s", (engine,))
            print(f"{engine}: windows missing {len(missing)}, extra {len(extra)}, different {len(different)} "
                  f"(of {len(expected)}), late trades {late[0][0]}")
        for engine, job_id in engine_job.items():
            restarts = support.job_restarts(settings, job_id)
            print(f"{engine}: {len(dead[engine])} dead letters, restarts {restarts}")
        print(f"TaskManagers before {managers}, after {taskmanagers(settings)}; jobs running "
              f"{submitted - started:.0f} s after the start, all settled "
              f"{time.monotonic() - submitted:.0f} s later")

    for job_id in engine_job.values():
        assert support.job_restarts(settings, job_id) == 0, support.job_exceptions(settings, job_id)
    assert taskmanagers(settings) == managers

    for engine in ENGINES:
        rows = dead[engine]
        assert set(rows) == set(by_coordinates), engine  # each bad record once, nothing else
        for key, (payload, length, sha1, reason, row_topic) in rows.items():
            record = by_coordinates[key]
            value = record.value
            assert row_topic == topic and reason, (engine, key)
            if value is None:
                assert payload is None and length is None and sha1 is None, (engine, record.klass)
            else:
                stored = (value[:STORED_BYTES], len(value), hashlib.sha1(value).hexdigest())
                assert (bytes(payload), length, sha1) == stored, (engine, record.klass)
            if engine == "datastream":
                assert reason == record.reason, (record.klass, reason, record.reason)

    for engine in ENGINES:
        missing, extra, different = window_differences(engine_windows(scratch_db, engine), expected)
        assert not (missing or extra or different), (engine, missing[:5], extra[:5], different[:5])
        late = support.query(scratch_db, "SELECT count(*) FROM late_trades WHERE engine = %s", (engine,))
        assert late == [(0,)], engine
