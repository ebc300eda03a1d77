"""Prometheus (stack/prometheus.py, part of the stack) scrapes Flink's reporter, the generator, the alert
service and the dashboard: each one's series reaches Prometheus's HTTP API, and the counts agree with an
independent count (Kafka's offsets, Flink's REST API, the requests this test makes)."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import REGISTRY
from werkzeug.serving import make_server

from dashboard.app import create_app
from stack import prometheus
from stack.demo import target_port
from tests import support

pytestmark = pytest.mark.integration


def value(settings, promql: str) -> float | None:
    """The query's single value (summed over series), None when Prometheus has no sample."""
    result = prometheus.query(settings, promql)
    return sum(float(series["value"][1]) for series in result) if result else None


def test_prometheus_scrapes_flink_the_generator_the_alert_service_and_the_dashboard(stack, kafka_topic):
    settings = stack
    topic, injected = kafka_topic("metrics_trades"), kafka_topic("metrics_injected")
    app = create_app(settings)
    server = make_server("127.0.0.1", target_port(settings.metrics.dashboard_target), app.server,
                         threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    processes = []
    try:
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "generator", "--topic", topic, "--injected-topic", injected,
             "--rate", "40", "--duration", "90", "--bad-fraction", "0.05", "--seed", "11", "--no-reference",
             "--quiet", "--metrics-port", str(target_port(settings.metrics.generator_target))],
            cwd=support.REPO))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "alerts",
             "--metrics-port", str(target_port(settings.metrics.alerts_target))], cwd=support.REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        client = app.server.test_client()
        for _ in range(5):
            assert client.get("/api/symbols").status_code == 200
        # The dashboard process's own count of its symbols query (this process serves it).
        timed = REGISTRY.get_sample_value("marketpulse_dashboard_query_seconds_count", {"query": "symbols"})
        found = {}

        def scraped():
            found.update({
                "flink": value(settings, "flink_jobmanager_numRegisteredTaskManagers"),
                "generator": value(settings, "marketpulse_generator_trades_total"),
                "bad": value(settings, "marketpulse_generator_bad_records_total"),
                "alerts": value(settings, "marketpulse_alerts_anomalies_read_total"),
                "dashboard": value(settings, 'marketpulse_dashboard_query_seconds_count{query="symbols"}'),
            })
            # A JobManager that has just (re)started reports 0 TaskManagers until the first registers.
            registered = support.flink_rest(settings, "/overview")["taskmanagers"]
            return all(v is not None for v in found.values()) and found["generator"] > 0 \
                and found["dashboard"] == timed and found["flink"] == registered

        support.wait_for(scraped, 60, "Prometheus to scrape Flink, the generator, alerts and dashboard",
                         interval=1)
        print(f"\nPrometheus ({prometheus.url(settings)}) has: {found}")
        # What Prometheus saw the generator produce is at most what Kafka holds (read after it).
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
        try:
            produced = consumer.end_offsets([TopicPartition(topic, 0)])[TopicPartition(topic, 0)]
        finally:
            consumer.close()
        assert 0 < found["generator"] <= produced
        assert 0 <= found["bad"] <= found["generator"]
        # Five identical requests within dashboard.cache_seconds share one query (dashboard/cache.py); run
        # alone, this process has counted that one; in the suite, earlier tests' queries too.
        assert timed >= 1
    finally:
        server.shutdown()
        server.server_close()
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
