"""Idle partitions (README "Idle partitions"): a symbol falls silent, then the whole market, and windows of
both engines still close, on time, and all of them.

Both jobs (sql/window_metrics.sql, engine 'sql', and the DataStream job, engine 'datastream') read a topic of
3 partitions, one symbol each, produced on the wall clock the way the generator does it: every trade is
sent at its event time, and while nothing is due a heartbeat round (generator/heartbeat.Heartbeats, the
generator's own code) goes to every partition once a second.
    A  20 s  every symbol trades
    B  60 s  S2 (partition 2) is silent; S0 and S1 trade; heartbeats go on
    C  30 s  nothing at all: no trade, no heartbeat (the generator is stopped)
    D  20 s  every symbol trades again, heartbeats too
Checked per engine:
  - every 10 s window of S0/S1 that ends in A or B is written within the time a silent partition holds
    event time back (the heartbeat interval, or the DataStream job's idle timeout if one is set) +
    out-of-orderness + the window sinks' flush interval + 1 s of its end (landed_at, the database's clock at
    INSERT, minus window_end);
  - the windows still open when everything stopped (C), those whose end plus the out-of-orderness bound
    plus the silent partition's hold-back falls in C included (in B, S2's event time moves with heartbeats
    only), are written within that bound of trading resuming, and the windows of D within it of their end;
  - after one flush trade per partition an hour later, every window of both sizes equals the independent
    reference (tests/reference.py): nothing is lost across the silences (no late trade either).
"""

from __future__ import annotations

import time

import pytest

from generator.heartbeat import Heartbeats
from generator.sink import KafkaSink
from marketpulse.sqltemplate import POSTGRES_SINK_TUNING
from marketpulse.trade import Trade
from tests import support
from tests.pipeline import (
    FLUSH_SYMBOL,
    engine_windows,
    reference_for,
    submit_datastream,
    submit_sql,
    wait_for_slots,
    window_differences,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3
SILENT = 2  # the partition (and symbol S2) that falls silent in phase B
PHASES = (("A", 20, True, True), ("B", 60, True, True), ("C", 30, False, False), ("D", 20, True, True))
TRADE_EVERY_S = 0.05  # per partition: 20 trades/s
ENGINES = ("sql", "datastream")


def produce(settings, topic: str) -> tuple[list[Trade], dict[str, tuple[float, float]]]:
    """The four phases; returns the trades sent and each phase's (start, end) in epoch seconds."""
    sink = KafkaSink(settings.kafka.bootstrap_servers, acks="all", linger_ms=5)
    beats = Heartbeats(lambda partition, value: sink.send_to_partition(topic, partition, value),
                       list(range(PARTITIONS)), settings.generator.heartbeat_ms / 1000,
                       event_time_ms=lambda _now: int(time.time() * 1000))
    sent: list[Trade] = []
    spans = {}
    try:
        for name, seconds, trading, beating in PHASES:
            start = time.time()
            spans[name] = (start, start + seconds)
            while time.time() < start + seconds:
                now_ms = int(time.time() * 1000)
                if trading:
                    for partition in range(PARTITIONS):
                        if name == "B" and partition == SILENT:
                            continue
                        trade = Trade(f"idle-{len(sent)}", f"S{partition}",
                                      round(100 + partition + (len(sent) % 17) * 0.01, 2), 1 + len(sent) % 9,
                                      "BUY" if len(sent) % 2 else "SELL", now_ms)
                        sink.send_to_partition(topic, partition, trade.to_json().encode())
                        sent.append(trade)
                if beating:
                    beats.tick(time.monotonic())  # every trade due by now is out: safe to promise it
                time.sleep(TRADE_EVERY_S)
            sink.flush()
    finally:
        sink.close()
    return sent, spans


def landed(scratch, engine: str) -> dict[tuple, tuple[float, float]]:
    """(symbol, window_seconds, window_start_ms) -> (window_end, landed_at) in epoch seconds."""
    rows = support.query(scratch, "SELECT symbol, window_seconds, "
                                  "(EXTRACT(EPOCH FROM window_start) * 1000)::bigint, "
                                  "EXTRACT(EPOCH FROM window_end), EXTRACT(EPOCH FROM landed_at) "
                                  "FROM window_metrics WHERE engine = %s", (engine,))
    return {(r[0], r[1], r[2]): (float(r[3]), float(r[4])) for r in rows}


def test_windows_close_through_a_silent_partition_and_a_silent_market(stack, tmp_path):
    settings = stack
    windows = settings.windows
    held_back = max(settings.generator.heartbeat_ms / 1000, float(windows.idleness_seconds))
    flush = float(POSTGRES_SINK_TUNING["sink.buffer-flush.interval"].removesuffix("s"))
    bound = held_back + windows.max_out_of_orderness_ms / 1000 + flush + 1
    short = windows.short_size_seconds
    topic = support.create_topic(settings, support.unique_name("idle.trades"), PARTITIONS)
    anomalies = support.create_topic(settings, support.unique_name("idle.anomalies"))
    scratch = support.create_scratch_database(settings)
    job_ids = []
    try:
        wait_for_slots(settings, PARTITIONS + 1)
        job_ids.append(submit_sql(settings, scratch, topic, "sql/window_metrics.sql"))
        job_ids.append(submit_datastream(settings, scratch, topic, anomalies))
        sent, spans = produce(settings, topic)
        time.sleep(bound + 2)
        report = []
        for engine in ENGINES:
            got = landed(scratch, engine)
            late_windows, lines = [], []
            for (symbol, size, _start), (end, at) in sorted(got.items(), key=lambda item: item[1][0]):
                if size != short or symbol == f"S{SILENT}":
                    continue
                phase = next((name for name, (a, b) in spans.items() if a <= end < b), None)
                # When a window could close: at its end, or, if event time could have passed its end by the
                # out-of-orderness bound only after everything stopped (C), when trading resumed. In B the
                # silent partition's event time moves with heartbeats only, up to held_back behind the
                # others, so a window ending in B's last (out-of-orderness + held_back) seconds may wait
                # for D: in C nothing moves event time.
                due = end + windows.max_out_of_orderness_ms / 1000 + held_back
                could_close = spans["D"][0] if spans["C"][0] <= due < spans["D"][0] else end
                if phase in ("A", "B", "C", "D") and end < spans["D"][1] - 1:
                    lag = at - could_close
                    lines.append((phase, lag))
                    if lag > bound:
                        late_windows.append((symbol, phase, round(end - spans["A"][0], 1), round(lag, 2)))
            by_phase = {name: [lag for phase, lag in lines if phase == name] for name in "ABCD"}
            report.append(f"{engine}: " + "; ".join(
                f"{name} {len(lags)} windows, max {max(lags):.1f}s"
                for name, lags in by_phase.items() if lags))
            assert not late_windows, f"{engine}: windows written later than {bound:.0f}s: {late_windows}"
            for name in ("A", "B", "D"):
                assert by_phase[name], f"{engine}: no 10 s window of phase {name} written"
            # The windows open when everything stopped (ending in C or at the start of it) were written.
            pending = [end for (symbol, size, _s), (end, _a) in got.items()
                       if size == short and spans["C"][0] <= end <= spans["C"][0] + short]
            assert pending, f"{engine}: the windows open when the market stopped were never written"
        print("\n" + "\n".join(report) + f"\n(bound: silent partition held back {held_back:g}s + "
              f"out-of-orderness + sink flush {flush:g}s + 1 s = {bound:g}s)")

        # Close every window, then all of them must equal the reference: nothing lost, nothing late.
        flush_at = sent[-1].event_time + 3_600_000
        sink = KafkaSink(settings.kafka.bootstrap_servers)
        for partition in range(PARTITIONS):
            sink.send_to_partition(topic, partition,
                                   Trade(f"FLUSH-{partition}", FLUSH_SYMBOL, 1.0, 1, "BUY", flush_at)
                                   .to_json().encode())
        sink.close()
        expected = reference_for(sent, (windows.size_seconds, short))

        def all_there():
            results = {engine: window_differences(engine_windows(scratch, engine), expected)
                       for engine in ENGINES}
            return results if all(not any(diff) for diff in results.values()) else None

        try:
            support.wait_for(all_there, 60, "every window of both engines = reference", interval=2)
        finally:
            for engine in ENGINES:
                missing, extra, different = window_differences(engine_windows(scratch, engine), expected)
                late = support.query(scratch, "SELECT count(*) FROM late_trades WHERE engine = %s",
                                     (engine,))[0][0]
                dead = support.query(scratch, "SELECT count(*) FROM dead_letters WHERE engine = %s",
                                     (engine,))[0][0]
                print(f"{engine}: {len(expected)} windows compared, missing {len(missing)}, "
                      f"extra {len(extra)}, different {len(different)}; late trades {late}, "
                      f"dead letters {dead} (heartbeats are neither)")
                assert late == 0 and dead == 0
    finally:
        for job_id in job_ids:
            support.cancel_job(settings, job_id)
        support.drop_scratch_database(settings, scratch)
        for name in (topic, anomalies):
            support.delete_topic(settings, name)
