"""Prometheus /metrics for MarketPulse's Python processes (prometheus_client): the generator and the alert
service serve theirs on a port of their own (--metrics-port; `make demo` and docker-compose pass the ports of
conf/pipeline.toml [metrics]); the dashboard serves /metrics on its own port. Prometheus (stack/prometheus.py)
scrapes them all. Every series is named marketpulse_<process>_...; README, Metrics, lists them.

Counters that a hot loop keeps in plain attributes are read when Prometheus scrapes (`ReadingCollector`), so
producing a trade costs no lock."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class ReadingCollector(Collector):
    """Series read from plain Python values at scrape time: (name, help, kind, read) with kind 'counter' or
    'gauge' and read() -> float."""

    def __init__(self, series: Iterable[tuple[str, str, str, Callable[[], float]]]):
        self.series = list(series)

    def collect(self):
        for name, help_text, kind, read in self.series:
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, help_text, value=float(read()))


def serve(port: int, what: str, collector: Collector | None = None, host: str = "0.0.0.0") -> bool:
    """Registers `collector` and serves /metrics on `port` (0: not at all). A port in use is a warning, not a
    failure: the process does its real work without metrics."""
    if collector is not None:
        REGISTRY.register(collector)
    if not port:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as err:
        print(f"{what}: warning: no /metrics on port {port} ({err.strerror or err}); running without",
              file=sys.stderr, flush=True)
        return False
    return True
