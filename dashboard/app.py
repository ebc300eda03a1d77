"""The MarketPulse dashboard (Dash). Reads PostgreSQL, Flink's REST API and Kafka's consumer offsets (lag).

    python -m dashboard            # Flask's development server on [dashboard] host:port (conf/pipeline.toml)
    python -m dashboard --serve    # gunicorn, [dashboard] workers x threads (dashboard.serve): production

The page is assembled here from its parts: dashboard.shell (top bar, controls, tabs, the refresh context and
the URL routing), one module per view in dashboard/views/, the alert strip and the REST API (/api/...).
Views render from the refresh context, only while their tab is open. Flink's health and the Kafka lag are
fetched in the background (dashboard.health.HealthMonitor), so no callback waits on Flink or Kafka."""

from __future__ import annotations

import dash
import plotly.io as pio

from dashboard import alerts_strip, api, cache, shell
from dashboard.db import Database
from dashboard.health import FlinkClient, HealthMonitor
from dashboard.views import Deps, all_views
from marketpulse.config import ConfigError, Settings, load_settings, postgres_dsn, secret_setting
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


def login_users(settings: Settings) -> dict[str, str]:
    """{user: password} when [dashboard] auth_user is set (login required), else {} (no login)."""
    user = settings.dashboard.auth_user
    if not user:
        return {}
    password = secret_setting(settings, "dashboard", "auth_password")
    if not password:
        raise ConfigError("dashboard.auth_user is set but has no password: set "
                          "MARKETPULSE_DASHBOARD_AUTH_PASSWORD or dashboard.auth_password_file")
    return {user: password}


# Open without a login: Prometheus scrapes /metrics (query latencies and process figures, no market data).
OPEN_PATHS = frozenset({"/metrics"})


def require_login(app: dash.Dash, users: dict[str, str]) -> None:
    """HTTP basic auth (dash-auth) on every route of the server, the page, Dash's own routes and /api/...,
    but OPEN_PATHS. Not dash-auth's public_routes: those also open Dash's layout and scripts."""
    import secrets

    import dash_auth
    from flask import request

    class Login(dash_auth.BasicAuth):
        def is_authorized(self):
            return request.path in OPEN_PATHS or super().is_authorized()

    # dash-auth keeps the user in Flask's session; a key of this process's own is enough for that (the
    # credentials are checked on every request).
    app.server.secret_key = app.server.secret_key or secrets.token_hex(32)
    Login(app, users)


def create_app(settings: Settings | None = None, db: Database | None = None,
               flink: FlinkClient | None = None) -> dash.Dash:
    settings = settings or load_settings()
    users = login_users(settings)
    flink = flink or FlinkClient(settings.flink.rest_url)
    deps = Deps(settings=settings, db=db or Database(postgres_dsn(settings, "reader")), flink=flink,
                monitor=HealthMonitor(flink, settings.dashboard.health_refresh_seconds, lag_reader(settings)))
    views = all_views()
    # Dash serializes callback answers with plotly's JSON; its default engine (orjson) first copies the
    # whole answer through a Python walk of every dict, which cost a 200-row anomaly table ~36 ms of CPU.
    # The standard library's encoder calls back only for what it cannot write itself: ~16 ms.
    pio.json.config.default_engine = "json"
    app = dash.Dash(__name__, title="MarketPulse", update_title=None, suppress_callback_exceptions=False)
    if users:
        require_login(app, users)
    app.layout = shell.layout(deps, views)
    app.server.config["MARKETPULSE_DB"] = deps.db
    app.server.config["MARKETPULSE_DEPS"] = deps
    app.server.add_url_rule("/metrics", "metrics", metrics)
    cache.install(app.server, float(settings.dashboard.cache_seconds))
    api.register(app.server, deps.db, deps.monitor)
    alerts_strip.register(app, deps.db, settings)
    shell.register(app, deps, views)
    for view in views:
        view.register(app, deps)
    # Dash sets its server up (the registry of its scripts) on the first request, and under gunicorn's threads
    # the requests arriving meanwhile see an empty registry: the page's scripts answer 500 "not a registered
    # library" and the page stays blank (plotly/dash#3971; seen in make demo). One request now, before any
    # thread serves, sets it up.
    app.server.test_client().get("/")
    return app


def main() -> None:
    try:
        settings = load_settings()
        app = create_app(settings)
    except ConfigError as err:
        raise SystemExit(f"dashboard: error: {err}") from None
    app.run(host=settings.dashboard.host, port=settings.dashboard.port, debug=False)
