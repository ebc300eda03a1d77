"""python -m dashboard --serve: the dashboard under gunicorn, as in production (make demo, docker-compose,
Kubernetes). `python -m dashboard` stays Flask's development server.

[dashboard] workers processes of [dashboard] threads threads each (gthread worker). Every worker builds its
own app after the fork (no preload): its database pool, its Flink health thread and its Kafka client are its
own, since none of them survives a fork.

/metrics with several workers: prometheus_client's multiprocess mode. Each worker writes its series to files
in PROMETHEUS_MULTIPROC_DIR (a fresh directory per server, removed when it stops) and /metrics, whichever
worker answers, sums every worker's (dashboard.app.metrics). The price: multiprocess mode has no process_*
series (CPU, memory of each worker)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from marketpulse.config import Settings, load_settings


def options(settings: Settings) -> dict:
    """gunicorn's settings from [dashboard]. Pure."""
    dash = settings.dashboard
    workers, threads = int(dash.workers), int(dash.threads)
    if workers < 1 or threads < 1:
        raise ValueError(f"[dashboard] workers = {workers}, threads = {threads}: both must be at least 1")
    return {
        "bind": f"{dash.host}:{dash.port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        # A refresh that takes this long is stuck (queries have a 5 s statement timeout): restart the worker.
        "timeout": 60,
        # Browsers poll every refresh_seconds on one connection: keep it open across two ticks.
        "keepalive": max(5, 2 * int(dash.refresh_seconds) + 1),
        # Ctrl-C / SIGTERM: in-flight refreshes get this long, then workers are killed (demo stops quickly).
        "graceful_timeout": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "marketpulse-dashboard",
        "child_exit": _worker_exited,
    }


def _worker_exited(_server, worker) -> None:
    # A dead worker's gauges must not be summed any more (its counters and histograms stay, as they should).
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def main(settings: Settings | None = None) -> None:
    settings = settings or load_settings()
    try:
        config = options(settings)
    except ValueError as err:
        sys.exit(f"error: {err}")
    try:
        from gunicorn.app.base import BaseApplication
    except ImportError:
        sys.exit("error: gunicorn is not installed; run `make setup` (or use `python -m dashboard`, the "
                 "development server)")

    class Server(BaseApplication):
        def load_config(self):
            for key, value in config.items():
                self.cfg.set(key, value)

        def load(self):
            from dashboard.app import create_app

            return create_app().server

    # Set before any worker imports prometheus_client: its metrics then live in mmapped files in this folder.
    metrics_dir = tempfile.mkdtemp(prefix="marketpulse-dashboard-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    print(f"dashboard: gunicorn on http://{config['bind']}, {config['workers']} workers x "
          f"{config['threads']} threads", flush=True)
    try:
        Server().run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
