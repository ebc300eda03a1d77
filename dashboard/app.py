"""The MarketPulse dashboard (Dash). Reads PostgreSQL, Flink's REST API and Kafka's consumer offsets (lag).

    python -m dashboard            # Flask's development server on [dashboard] host:port (conf/pipeline.toml)
    python -m dashboard --serve    # gunicorn, [dashboard] workers x threads (dashboard.serve): production

The page is assembled here from its parts: dashboard.shell (top bar, controls, tabs, the refresh context and
the URL routing), one module per view in dashboard/views/, the alert strip and the REST API (/api/...).
Views render from the refresh context, only while their tab is open. Flink's health and the Kafka lag are
fetched in the background (dashboard.health.HealthMonitor), so no callback waits on Flink or Kafka."""

from __future__ import annotations

import dash

from dashboard import alerts_strip, api, cache, shell
from dashboard.db import Database
from dashboard.health import FlinkClient, HealthMonitor
from dashboard.views import Deps, all_views
from marketpulse.config import Settings, load_settings, postgres_dsn
from marketpulse.kafka_lag import LagReader


def lag_reader(settings: Settings) -> LagReader:
    """Consumer lag of the jobs (trades topic) and of the alert service (anomalies topic)."""
    return LagReader(settings.kafka.bootstrap_servers,
                     [settings.kafka.trades_topic, settings.kafka.anomalies_topic], timeout_seconds=2.0)


def metrics():
    """Prometheus /metrics: the dashboard's query times (dashboard.db) and the process's own series; under
    gunicorn (dashboard.serve) every worker's, summed from PROMETHEUS_MULTIPROC_DIR."""
    import os

    from flask import Response
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def create_app(settings: Settings | None = None, db: Database | None = None,
               flink: FlinkClient | None = None) -> dash.Dash:
    settings = settings or load_settings()
    flink = flink or FlinkClient(settings.flink.rest_url)
    deps = Deps(settings=settings, db=db or Database(postgres_dsn(settings)), flink=flink,
                monitor=HealthMonitor(flink, settings.dashboard.health_refresh_seconds, lag_reader(settings)))
    views = all_views()
    app = dash.Dash(__name__, title="MarketPulse", update_title=None, suppress_callback_exceptions=False)
    app.layout = shell.layout(deps, views)
    app.server.config["MARKETPULSE_DB"] = deps.db
    app.server.config["MARKETPULSE_DEPS"] = deps
    app.server.add_url_rule("/metrics", "metrics", metrics)
    cache.install(app.server, float(settings.dashboard.cache_seconds))
    api.register(app.server, deps.db, flink, lag_reader(settings))
    alerts_strip.register(app, deps.db, settings)
    shell.register(app, deps, views)
    for view in views:
        view.register(app, deps)
    return app


def main() -> None:
    settings = load_settings()
    app = create_app(settings)
    app.run(host=settings.dashboard.host, port=settings.dashboard.port, debug=False)
