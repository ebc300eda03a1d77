"""End-to-end latency of the DataStream job on the wall clock, at fixed trade rates.

    .venv/bin/python bench/latency.py [--rates 200,1000,5000] [--seconds 60] [--warmup 10]
                                      [--anomaly-rate 0.01]

For each rate, on the running stack (`make up`): a fresh 4-partition trades topic, anomalies topic and
scratch database; the DataStream job (jobs/market_metrics.py) submitted from the earliest offsets and
RUNNING before the first trade; then the generator on the wall clock (`--clock wall`: a trade's event_time
is the moment the generator made it, its default 20 ms producer linger included) for --warmup + --seconds
with injected anomalies. The figures are of the trades and windows after the warm-up: a job that has just
started runs its first seconds of traffic through cold code (the JVM's JIT, the Python worker's first
bundles), which is the job's start, not its steady state; the warm-up's own anomaly latencies are printed on
a line of their own. Printed per rate, p50 and p99 in milliseconds:

    event -> anomaly on Kafka   a consumer of the anomalies topic: receive time - event_time
    event -> anomaly row        anomalies.landed_at (PostgreSQL's clock on INSERT) - event_time, and the
                                part up to detected_at (the operator's clock when it emitted the anomaly)
    window end -> window row    window_metrics.landed_at - window_end, and the same minus the time the
                                watermark needs to pass the window's end (out-of-orderness + 1 ms): the
                                part that is the job's, not the lateness budget's

Every clock is this machine's. The job's own view, the gauges eventTimeLagMs and watermarkLagMs of the
keyed operator, is printed from the REST API at the end of each run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kafka import KafkaConsumer  # noqa: E402

from marketpulse.config import load_settings  # noqa: E402
from marketpulse.sqltemplate import LOW_LATENCY_FLUSH_INTERVAL  # noqa: E402
from tests import support  # noqa: E402

JOB = "jobs/market_metrics.py"
PARTITIONS = 4


def say(text: str) -> None:
    print(text, flush=True)


def percentiles(values: list[float]) -> str:
    if len(values) < 2:
        return f"n={len(values)}"
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return f"p50 {cuts[49]:7.0f}  p99 {cuts[98]:7.0f}  (n={len(values)})"


class AnomalyListener(threading.Thread):
    """(event_time, receive time - event_time) of every anomaly message (first copy of each (trade_id,
    rule)), in ms."""

    def __init__(self, settings, topic: str):
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka.bootstrap_servers,
                                      auto_offset_reset="earliest", fetch_max_wait_ms=10)
        self.latencies: dict[tuple[str, str], tuple[float, float]] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for records in self.consumer.poll(timeout_ms=50).values():
                received = time.time() * 1000
                for record in records:
                    value = json.loads(record.value)
                    self.latencies.setdefault((value["trade_id"], value["rule"]),
                                              (value["event_time"], received - value["event_time"]))
        self.consumer.close()


def run_rate(settings, rate: int, seconds: int, warmup: int, anomaly_rate: float, job_args: list[str],
             flink_args: list[str]) -> dict:
    topic = support.create_topic(settings, support.unique_name(f"bench.latency.{rate}"), PARTITIONS)
    injected = support.create_topic(settings, f"{topic}.injected")
    anomalies_topic = support.create_topic(settings, f"{topic}.anomalies")
    scratch = support.create_scratch_database(settings, prefix="mp_latency")
    job_id = None
    listener = AnomalyListener(settings, anomalies_topic)
    try:
        env = support.env_for(scratch, kafka_trades_topic=topic, kafka_anomalies_topic=anomalies_topic)
        result = support.flink_run("-d", *flink_args, "-py", JOB, "--start-from", "earliest",
                                   "--group-id", support.unique_name("latency"), *job_args, env=env)
        if result.returncode != 0:
            raise SystemExit(result.stdout[-2000:] + result.stderr[-2000:])
        job_id = support.job_id_from_output(result.stdout)
        support.wait_for(lambda: all(v["status"] == "RUNNING" for v in
                                     support.flink_rest(settings, f"/jobs/{job_id}")["vertices"]),
                         180, "all tasks running")
        listener.start()
        say(f"rate {rate}/s: job {job_id} running; generator for {warmup}s of warm-up + {seconds}s on "
            "the wall clock")
        steady_from_ms = (time.time() + warmup) * 1000  # event times from here on are measured
        subprocess.run([sys.executable, "-m", "generator", "--clock", "wall", "--rate", str(rate),
                        "--duration", str(warmup + seconds), "--anomaly-rate", str(anomaly_rate),
                        "--late-fraction", "0", "--bad-fraction", "0", "--topic", topic,
                        "--injected-topic", injected, "--no-reference", "--quiet",
                        "--bootstrap-servers", settings.kafka.bootstrap_servers],
                       cwd=ROOT, check=True, timeout=warmup + seconds + 120)
        time.sleep(5)  # the last anomalies and the windows the watermark has passed
        listener.stopping.set()
        listener.join(10)
        state = support.flink_rest(settings, f"/jobs/{job_id}")["state"]
        if state != "RUNNING":
            raise SystemExit(f"job {state}: {support.job_exceptions(settings, job_id)}")
        gauges = {name: support.vertex_metric_sum(settings, job_id, f".{name}")
                  for name in ("eventTimeLagMs", "watermarkLagMs")}
        # each anomaly row: (event_time in epoch ms, landed_at - event_time, detected_at - event_time)
        anomaly_rows = [tuple(map(float, row)) for row in support.query(scratch, """
            SELECT EXTRACT(EPOCH FROM event_time) * 1000, EXTRACT(EPOCH FROM landed_at - event_time) * 1000,
                   EXTRACT(EPOCH FROM detected_at - event_time) * 1000 FROM anomalies""")]
        steady = [row for row in anomaly_rows if row[0] >= steady_from_ms]
        windows = support.query(scratch, """
            SELECT EXTRACT(EPOCH FROM landed_at - window_end) * 1000 FROM window_metrics
            WHERE window_start >= to_timestamp(%s)""", (steady_from_ms / 1000,))
        to_window = [float(ms) for (ms,) in windows]
        watermark_delay = settings.windows.max_out_of_orderness_ms + 1
        return {"rate": rate,
                "kafka": [ms for event, ms in listener.latencies.values() if event >= steady_from_ms],
                "row": [row[1] for row in steady], "detected": [row[2] for row in steady],
                "warmup_row": [row[1] for row in anomaly_rows if row[0] < steady_from_ms],
                "window": to_window, "window_job": [ms - watermark_delay for ms in to_window],
                "gauges": gauges}
    finally:
        listener.stopping.set()
        if job_id:
            support.cancel_job(settings, job_id)
        support.drop_scratch_database(settings, scratch)
        for name in (topic, injected, anomalies_topic):
            support.delete_topic(settings, name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="200,1000,5000", help="trades/s, comma-separated")
    parser.add_argument("--seconds", type=int, default=60, help="generator run per rate (default 60)")
    parser.add_argument("--warmup", type=int, default=10,
                        help="seconds of traffic before the measured part, reported on their own "
                             "(default 10)")
    parser.add_argument("--anomaly-rate", type=float, default=0.01,
                        help="share of trades the generator makes anomalous (default 0.01)")
    parser.add_argument("--job-args", default="",
                        help="extra options for the job, e.g. '--python-bundle-ms 20'")
    parser.add_argument("--flink-args", default="",
                        help="extra options for `flink run`, e.g. '-Dexecution.buffer-timeout.interval=10ms'")
    args = parser.parse_args()
    settings = load_settings()
    results = [run_rate(settings, int(rate), args.seconds, args.warmup, args.anomaly_rate,
                        args.job_args.split(), args.flink_args.split())
               for rate in args.rates.split(",")]
    say("\nlatency in ms (this machine's clocks; " + f"{args.seconds}s per rate after {args.warmup}s of "
        f"warm-up, python bundle {settings.flink.python_bundle_time_ms} ms, buffer timeout "
        f"{settings.flink.buffer_timeout_ms} ms, anomaly and window sinks flush "
        f"{LOW_LATENCY_FLUSH_INTERVAL}, "
        f"job options: {args.job_args or 'none'}, flink run options: {args.flink_args or 'none'})")
    for result in results:
        say(f"{result['rate']:>5} trades/s  event -> anomaly on Kafka    {percentiles(result['kafka'])}")
        say(f"{'':>5}           event -> anomaly row         {percentiles(result['row'])}")
        say(f"{'':>5}           ... of which to detected_at  {percentiles(result['detected'])}")
        say(f"{'':>5}           window end -> window row     {percentiles(result['window'])}")
        say(f"{'':>5}           ... after the watermark      {percentiles(result['window_job'])}")
        say(f"{'':>5}           warm-up: event -> anomaly row {percentiles(result['warmup_row'])}")
        say(f"{'':>5}           gauges at the end            {result['gauges']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
