"""The keyed operator and the sinks at parallelism 1, 2 and 4, on a cluster of two TaskManager processes, give
exactly the reference results.

A private stack of its own ([flink] taskmanagers = 2, tests.support.private_stack, port base
MARKETPULSE_PARALLEL_PORT_BASE, default 21000, so every port stays below 32768) runs each TaskManager as a
process of its own, as on two machines: records between subtasks on different TaskManagers go through Flink's
network stack. One seeded stream (out-of-order trades within the watermark bound, injected anomalies, bad
records) goes to a 4-partition topic, then one flush trade per partition an hour of event time later, which
closes every window. The DataStream job runs on it at parallelism 1, 2 and 4 (keyed operator and sinks; the
source has one subtask per partition) and the SQL job (sql/window_metrics.sql) at 2, all at once, each into a
scratch database of its own. Each must write exactly the reference windows (tests/reference.py: missing 0,
extra 0, different 0), no late trade (none is behind its partition's watermark), the bad records as dead
letters, and the DataStream jobs exactly the reference detector's anomalies. Where every subtask ran (REST
/jobs/<id>/vertices/<vid>) shows both TaskManagers at work: a job whose tasks ran on only one would prove
nothing about the network path.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from stack import jarrun
from tests import support
from tests.pipeline import (
    RESULT_TIMEOUT,
    engine_windows,
    flush_trades,
    generate,
    reference_anomaly_set,
    reference_for,
    send,
    submit_datastream,
    submit_sql,
    window_differences,
)

pytestmark = pytest.mark.integration

PORT_BASE = int(os.environ.get("MARKETPULSE_PARALLEL_PORT_BASE", "21000"))
TASKMANAGERS = 2
PARTITIONS = 4  # as [kafka] trades_partitions
DATASTREAM_PARALLELISMS = (1, 2, 4)
SQL_PARALLELISM = 2  # the cluster's default parallelism (parallelism.default), which the gateway's jobs take
# With slot sharing a job takes as many slots as its widest vertex: each DataStream job one per partition (its
# source), the SQL job SQL_PARALLELISM. taskmanager_slots is the cluster's total, split over the TaskManagers.
SLOTS = PARTITIONS * len(DATASTREAM_PARALLELISMS) + SQL_PARALLELISM
KEYED = "per symbol"  # in the name of the DataStream job's keyed operator
GENERATOR_OPTIONS = ("--seed", "20251205", "--count", "12000", "--anomaly-rate", "0.005", "--late-fraction",
                     "0.02", "--max-delay-ms", "2000", "--bad-fraction", "0.005")


@pytest.fixture(scope="module")
def two_taskmanagers():
    # No compiled plan for the one SQL submission: COMPILE PLAN, then EXECUTE PLAN, costs more than planning
    # once.
    with support.private_stack("parallelism", PORT_BASE, SLOTS, TASKMANAGERS, flink_sql_plan_cache="false",
                               flink_parallelism=str(SQL_PARALLELISM)) as settings:
        yield settings


def vertex_parallelism(settings, job_id: str) -> dict[str, int]:
    return {vertex["name"]: vertex["parallelism"]
            for vertex in support.flink_rest(settings, f"/jobs/{job_id}")["vertices"]}


def remote_bytes_in(settings, job_id: str) -> int | None:
    """Bytes the job's tasks received from another TaskManager (numBytesInRemote), if Flink reports it."""
    total, seen = 0, False
    for vertex in support.flink_rest(settings, f"/jobs/{job_id}")["vertices"]:
        base = f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
        names = [m["id"] for m in support.flink_rest(settings, base) if m["id"].endswith("numBytesInRemote")]
        if names:
            seen = True
            values = support.flink_rest(settings, f"{base}?get={','.join(names)}&agg=sum")
            total += sum(int(float(value["sum"])) for value in values)
    return total if seen else None


def test_parallelism_1_2_4_on_two_taskmanagers_gives_the_reference_results(two_taskmanagers, tmp_path):
    settings = two_taskmanagers
    registered = sorted(tm["id"] for tm in support.flink_rest(settings, "/taskmanagers")["taskmanagers"])
    assert len(registered) == TASKMANAGERS, registered
    sizes = (settings.windows.size_seconds, settings.windows.short_size_seconds)
    topic = support.create_topic(settings, support.unique_name("par.trades"), PARTITIONS)
    injected = support.create_topic(settings, support.unique_name("par.injected"))
    stream = generate(topic, injected, tmp_path, *GENERATOR_OPTIONS)
    flush = flush_trades(stream, PARTITIONS)
    send(settings, topic, flush, partition_of=lambda trade: int(trade.trade_id.rsplit("-", 1)[1]))
    expected = reference_for(stream.valid, sizes)
    # Each symbol's trades in Kafka order (key = symbol: one partition), then the flush trades.
    expected_anomalies = reference_anomaly_set(settings, stream.valid + flush)
    assert expected_anomalies and stream.bad and stream.delayed_ids

    def start_datastream(parallelism: int) -> tuple[str, object, str]:
        scratch = support.create_scratch_database(settings)
        anomalies_topic = support.create_topic(settings, support.unique_name(f"par{parallelism}.anomalies"))
        job_id = submit_datastream(settings, scratch, topic, anomalies_topic,
                                   job_args=("--parallelism", str(parallelism),
                                             "--group-id", f"test-par{parallelism}.{topic}"))
        return f"datastream p={parallelism}", scratch, job_id

    def start_sql() -> tuple[str, object, str]:
        scratch = support.create_scratch_database(settings)
        # Planned while the DataStream jobs' PythonDrivers run: on a loaded 2-core machine that took > 180 s.
        job_id = submit_sql(settings, scratch, topic, "sql/window_metrics.sql", injected, timeout=600)
        return f"sql p={SQL_PARALLELISM}", scratch, job_id

    # The SQL job's planning overlaps the DataStream jobs' submissions, which go one after the other (each
    # runs PythonDriver inside the JobManager); then all four drain the topic at once.
    jarrun.uploaded_jar_id(settings, jarrun.python_driver_jar())
    with ThreadPoolExecutor(max_workers=2) as pool:
        sql_run = pool.submit(start_sql)
        runs = [start_datastream(parallelism) for parallelism in DATASTREAM_PARALLELISMS]
        runs.append(sql_run.result())

    want_counts = {key: row["trade_count"] for key, row in expected.items()}
    lines = [f"stream: {len(stream.valid):,} valid trades ({len(stream.delayed_ids)} held back <= 2 s), "
             f"{stream.bad} bad records, {len(stream.symbols)} symbols in {PARTITIONS} partitions; "
             f"reference: {len(expected):,} windows, {len(expected_anomalies)} anomalies",
             f"TaskManagers: {', '.join(registered)}",
             f"{'job':<16}{'vertex parallelism':<22}{'windows (missing/extra/different)':<36}"
             f"{'anomalies':<12}{'dead letters':<14}{'late':<6}subtasks per TaskManager (keyed | all)"]
    failures = []
    for label, scratch, job_id in runs:
        engine = label.split()[0]

        def settled(scratch=scratch, engine=engine, job_id=job_id):
            state = support.flink_rest(settings, f"/jobs/{job_id}")["state"]
            assert state == "RUNNING", f"job {job_id} is {state}"
            got = engine_windows(scratch, engine)
            return got if {key: row["trade_count"] for key, row in got.items()} == want_counts else None

        try:
            got = support.wait_for(settled, RESULT_TIMEOUT, f"{label}'s windows = the reference", interval=2)
        except AssertionError as err:
            got = engine_windows(scratch, engine)
            failures.append(f"{label}: {err}\n{support.job_exceptions(settings, job_id)}")
        missing, extra, different = window_differences(got, expected)
        try:
            support.wait_for(lambda scratch=scratch: support.query(
                scratch, "SELECT count(*) FROM dead_letters")[0][0] >= stream.bad, 30, "dead letters")
        except AssertionError:
            pass  # the count below says how many
        dead = support.query(scratch, "SELECT count(*) FROM dead_letters")[0][0]
        late = support.query(scratch, "SELECT count(*) FROM late_trades")[0][0]
        anomalies = "-"
        if engine == "datastream":
            def anomaly_rows(scratch=scratch):
                rows = support.query(scratch, "SELECT trade_id, rule, z_score FROM anomalies")
                return rows if len(rows) >= len(expected_anomalies) else None

            try:
                rows = support.wait_for(anomaly_rows, 30, f"{label}'s anomalies")
            except AssertionError:
                rows = support.query(scratch, "SELECT trade_id, rule, z_score FROM anomalies")
            wrong = [row for row in rows if (row[0], row[1]) not in expected_anomalies
                     or not math.isclose(row[2], expected_anomalies[(row[0], row[1])], rel_tol=1e-9)]
            same = not wrong and len(rows) == len(expected_anomalies)
            anomalies = f"{len(rows)} {'=' if same else '!='} ref"
            if not same:
                failures.append(f"{label}: anomalies differ from the reference: {wrong[:5]}, "
                                f"{len(rows)} rows")
        parallelism = vertex_parallelism(settings, job_id)
        where = support.job_placement(settings, job_id)
        used = sorted({tm for counts in where.values() for tm in counts})
        keyed = next((counts for name, counts in where.items() if KEYED in name), None)
        per_tm = " ".join(str(sum(counts.get(tm, 0) for counts in where.values())) for tm in registered)
        keyed_tm = " ".join(str(keyed.get(tm, 0)) for tm in registered) if keyed else "-"
        windows = f"{len(got):,} ({len(missing)}/{len(extra)}/{len(different)})"
        shape = "/".join(str(p) for p in parallelism.values())
        if len(parallelism) > 4:  # the SQL job's many vertices
            shape = f"{min(parallelism.values())}-{max(parallelism.values())} ({len(parallelism)} vertices)"
        lines.append(f"{label:<16}{shape:<22}{windows:<36}"
                     f"{anomalies:<12}{dead:<14}{late:<6}{keyed_tm} | {per_tm}; "
                     f"bytes in from the other TaskManager: {remote_bytes_in(settings, job_id)}")
        if missing or extra or different:
            failures.append(f"{label}: windows differ from the reference: missing {missing[:3]}, extra "
                            f"{extra[:3]}, different {different[:3]}")
        if dead != stream.bad or late:
            failures.append(f"{label}: {dead} dead letters (want {stream.bad}), {late} late trades (want 0)")
        if used != registered:
            failures.append(f"{label}: its tasks ran on {used} only, not on every TaskManager: {where}")
        if engine == "datastream":
            want = int(label.rsplit("=", 1)[1])
            if next(p for name, p in parallelism.items() if KEYED in name) != want:
                failures.append(f"{label}: vertex parallelism {parallelism}")
            if want == max(DATASTREAM_PARALLELISMS) and sorted(keyed or {}) != registered:
                failures.append(f"{label}: its keyed operator ran on {sorted(keyed or {})} only: {where}")
    print("\n" + "\n".join(lines))
    assert not failures, "\n".join(failures)
