"""Command line of the alert service: settings from conf/pipeline.toml [alerts] (MARKETPULSE_ALERTS_<KEY>)."""

from __future__ import annotations

import argparse

from alerts import __doc__ as CONTRACT
from alerts.config import AlertConfig
from alerts.service import AlertService, StopFlag, say
from alerts.store import DEAD, DELIVERED, SUPPRESSED, SchemaMissing
from marketpulse.config import ConfigError, load_settings


def serve_metrics(port: int, service: AlertService) -> None:
    """/metrics on `port`: the service's decision counts, read at scrape time (marketpulse.metrics)."""
    from marketpulse.metrics import ReadingCollector, serve

    counts = service.counts
    serve(port, "alerts", ReadingCollector([
        ("marketpulse_alerts_anomalies_read", "Records read from the anomalies topic", "counter",
         lambda: counts["read"]),
        ("marketpulse_alerts_delivered", "Alerts every channel took", "counter", lambda: counts[DELIVERED]),
        ("marketpulse_alerts_dead", "Alerts a channel refused after its retries (dead letters)", "counter",
         lambda: counts[DEAD]),
        ("marketpulse_alerts_suppressed", "Alerts held back by the cooldown", "counter",
         lambda: counts[SUPPRESSED]),
        ("marketpulse_alerts_stale", "Anomalies too old to alert on when read", "counter",
         lambda: counts["stale"]),
        ("marketpulse_alerts_invalid", "Records on the topic that are not anomalies", "counter",
         lambda: counts["invalid"]),
    ]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m alerts", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=CONTRACT.split("\n\n")[0],
        epilog="Settings: the [alerts] section of conf/pipeline.toml; any key can be overridden with "
               "MARKETPULSE_ALERTS_<KEY>, e.g. MARKETPULSE_ALERTS_WEBHOOK_URL=https://example.org/hook.")
    parser.add_argument("--metrics-port", type=int, default=0, metavar="PORT",
                        help="serve Prometheus /metrics on PORT (anomalies read, alerts delivered, "
                             "suppressed, dead; 0 = off; `make demo` uses [metrics] alerts_target's port)")
    args = parser.parse_args(argv)
    stop = StopFlag()
    try:
        settings = load_settings()
        config = AlertConfig.from_settings(settings)
        service = AlertService(settings, config, stop)  # resolves the writer's password
    except ConfigError as err:
        say(f"error: {err}")
        return 2
    stop.install()
    if args.metrics_port:
        serve_metrics(args.metrics_port, service)
    try:
        return service.run()
    except SchemaMissing as err:
        say(f"error: {err}")
        return 1
    except ValueError as err:  # e.g. a setting the channels cannot use
        say(f"error: {err}")
        return 2
