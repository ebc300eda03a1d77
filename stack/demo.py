"""`make demo`: the whole system on this machine. Brings the stack up, submits the DataStream job and the
SQL scripts, starts the generator, the alert service, the forecaster and the dashboard, prints where to look,
and reports progress until Ctrl-C, which stops them and the jobs it submitted (the stack stays up: make
down)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

from alerts.config import AlertConfig
from forecaster.config import ForecastConfig
from marketpulse.config import Settings
from stack import paths, prometheus
from stack.check import first_window_landed, newest_windows, table_counts
from stack.errors import StackError
from stack.jobs import cancel, submit_all
from stack.log import say
from stack.proc import port_open, wait_until

LOG_DIR = paths.STACK_DIR / "demo"


def _spawn(name: str, args: list[str], niceness: int = 0) -> subprocess.Popen:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / f"{name}.log", "ab")
    lower_priority = (lambda: os.nice(niceness)) if niceness else None
    return subprocess.Popen([sys.executable, *args], cwd=paths.REPO, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, preexec_fn=lower_priority)


def run_demo(settings: Settings, up) -> int:
    started_wall = time.time()
    # Ctrl-C stops the demo even when it was started with SIGINT ignored (a non-interactive shell's
    # background job passes that on), or its children, which take SIGINT themselves, would stop without it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    up()
    stack_up_at = time.monotonic()
    # The generator first, the jobs after: each job reads the topic from its committed offsets (the
    # earliest the first time), so nothing produced while they are submitted is lost, and the first
    # windows are not held up by the submission.
    generator = _start_feed(settings)
    processes = [generator]
    try:
        job_ids = submit_all(settings)
    except BaseException:
        _stop_processes(processes)
        raise
    say(f"jobs submitted {time.monotonic() - stack_up_at:.0f}s after the stack was up")
    # The dashboard after the submissions: its gunicorn workers' start (~10 s of CPU) would slow them on two
    # cores, and it is ready while the jobs' tasks deploy.
    dashboard = _spawn("dashboard", ["-m", "dashboard", "--serve"])
    processes.append(dashboard)
    if job_ids and _wait_running(settings, job_ids, timeout=120, since=stack_up_at):
        say(f"jobs running {time.monotonic() - stack_up_at:.0f}s after the stack was up")
    # Only now: on two cores their start (Kafka consumer, statsmodels) would slow the submissions, and
    # neither loses anything by starting later (the alert service reads the anomalies topic from its
    # committed offsets, the forecaster refits every few minutes on what is in PostgreSQL).
    alerts, forecaster = _start_services(settings)
    processes += [alerts, forecaster]
    host, port = settings.dashboard.host, settings.dashboard.port
    # With a history, the link opens on its hour rather than the dashboard's default 15 minutes.
    link = f"http://{host}:{port}" + ("/?range=1h" if settings.demo.history_minutes >= 60 else "")
    wait_until(lambda: port_open(port, host), 60, "dashboard", LOG_DIR / "dashboard.log",
               alive=lambda: dashboard.poll() is None)
    print(f"""
  MarketPulse is running.
    dashboard      {link}
    Flink web UI   {settings.flink.rest_url}
    Prometheus     {prometheus.url(settings)}   (Flink, generator, alerts, dashboard metrics)
    check data     make check        (rows per table, newest window, running jobs)
    alerts         {paths.shown(LOG_DIR / "alerts.log")}   (webhooks: README, Alerts)
    forecasts      {paths.shown(LOG_DIR / "forecaster.log")}   (symbol view: band ahead of the last candle)
    stop           Ctrl-C here, then `make down` to stop the stack
""", flush=True)

    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    first_window_at = None
    try:
        while not stop["requested"]:
            for name, proc in (("generator", generator), ("alerts", alerts), ("forecaster", forecaster),
                               ("dashboard", dashboard)):
                if proc.poll() is not None:
                    raise StackError(f"{name} exited with code {proc.returncode}; see {LOG_DIR / name}.log")
            counts = table_counts(settings)
            if first_window_at is None:  # by the row's landed_at: rows may have landed before this loop
                first_window_at = first_window_landed(settings, started_wall)
                if first_window_at is not None:
                    say(f"first window row in PostgreSQL {first_window_at - started_wall:.0f}s after "
                        "`make demo` started")
            say("rows: " + ", ".join(f"{t} {n}" for t, n in counts.items() if t != "symbols"))
            for _ in range(20):
                if stop["requested"]:
                    break
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        say("stopping the generator, the alert service, the forecaster, the dashboard and the jobs this demo "
            "submitted")
        _stop_processes(processes)
        for job_id in job_ids:
            try:
                cancel(settings, job_id)  # deliberate: the registry lets them stay down
            except StackError:
                pass
        say("done; the stack is still up (make status / make down)")
    return 0


def _wait_running(settings: Settings, job_ids: list[str], timeout: float, since: float) -> bool:
    """True once every job and all its tasks run (False after `timeout`: the progress lines go on). Says
    when each job got there, in seconds after `since` (monotonic)."""
    from stack import flink

    deadline = time.monotonic() + timeout
    pending = set(job_ids)
    while time.monotonic() < deadline:
        try:
            jobs = {job["jid"]: job for job in flink.rest(settings, "/jobs/overview")["jobs"]}
        except (OSError, ValueError, KeyError):
            jobs = {}
        for job_id in sorted(pending):
            job = jobs.get(job_id)
            if job and job["state"] == "RUNNING" and job["tasks"]["running"] == job["tasks"]["total"]:
                pending.discard(job_id)
                say(f"'{job['name']}': all {job['tasks']['total']} tasks running "
                    f"{time.monotonic() - since:.1f}s after the stack was up")
        if not pending:
            return True
        time.sleep(0.5)
    return False


def _stop_processes(processes) -> None:
    # SIGTERM, which all of them take as Ctrl-C (flush, then exit): a demo started from a non-interactive
    # shell's background (nohup ... &, some CI runners) passes SIGINT on ignored, and they would run on.
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def target_port(target: str) -> int:
    """The port of a "host:port" scrape target ([metrics]), the one the process itself serves on."""
    return int(target.rsplit(":", 1)[1])


def history_minutes(configured: float, newest_end: datetime | None, now: datetime) -> float:
    """The demo's history: the configured minutes ending now, cut at the newest window already in PostgreSQL.
    A demo run again within the hour then publishes only the gap since the last run's final window, instead
    of rewriting that run's windows with other trades (the jobs start afresh on every demo). Pure."""
    if not configured or newest_end is None:
        return configured
    gap = (now - newest_end).total_seconds() / 60
    return round(max(0.0, min(float(configured), gap)), 2)


def _start_feed(settings: Settings) -> subprocess.Popen:
    """The generator, as [demo] says."""
    demo = settings.demo
    symbols = ["--symbols", demo.symbols] if demo.symbols else []
    if demo.source == "synthetic":
        newest = max((end for _, _, end, _ in newest_windows(settings)), default=None)
        minutes = history_minutes(demo.history_minutes, newest, datetime.now(UTC))
        generator = _spawn("generator", [
            "-m", "generator", "--rate", str(demo.rate), "--anomaly-rate", str(demo.anomaly_rate),
            "--late-fraction", str(demo.late_fraction), "--bad-fraction", str(demo.bad_fraction),
            "--surge-rate", str(demo.surge_rate),
            "--history-minutes", str(minutes), "--history-rate", str(demo.history_rate),
            "--reference-to-postgres", "--metrics-port", str(target_port(settings.metrics.generator_target)),
            *symbols])
        if minutes:
            cut = f" (windows in PostgreSQL end {newest:%H:%M:%S})" if minutes < demo.history_minutes else ""
            say(f"generator: {minutes:g} min of history first{cut}: event times up to now, "
                f"{demo.history_rate:g} trades/s of event time, about "
                f"{minutes * 60 * demo.history_rate:,.0f} trades, as fast as Kafka takes them")
        elif demo.history_minutes:
            say(f"generator: no history (windows in PostgreSQL reach {newest:%H:%M:%S}); live from now")
        say(f"generator: {demo.rate} trades/s with anomalies, late and bad records "
            f"(log {paths.shown(LOG_DIR)}/generator.log)")
    elif demo.source in ("yahoo", "alphavantage"):
        generator = _spawn("generator", ["-m", "generator", "--source", demo.source, *symbols,
                                         "--status-to-postgres"])  # live sources: no /metrics yet
        say(f"generator: live {demo.source} bars of {demo.symbols or 'the default symbols'}, on the "
            f"trading calendar (log {paths.shown(LOG_DIR)}/generator.log)")
    else:
        raise StackError(f"[demo] source = {demo.source!r}: use synthetic, yahoo or alphavantage")
    return generator


def _start_services(settings: Settings) -> tuple[subprocess.Popen, subprocess.Popen]:
    """The alert service and the forecaster."""
    alerts = _spawn("alerts", ["-m", "alerts",
                               "--metrics-port", str(target_port(settings.metrics.alerts_target))])
    cooldown = AlertConfig.from_settings(settings).cooldown_seconds
    say(f"alert service: anomalies -> alerts, cooldown {cooldown:g} s per symbol and rule "
        f"(log {paths.shown(LOG_DIR)}/alerts.log)")
    # Batch work at a lower priority: its first fits (~6 s of CPU per symbol) come while the jobs drain the
    # history, and on two cores they slowed the drain; a forecast a few seconds later costs nothing.
    forecaster = _spawn("forecaster", ["-m", "forecaster"], niceness=10)
    forecast = ForecastConfig.from_settings(settings)
    say(f"forecaster: ARIMA and a linear trend per symbol on {forecast.bar_seconds} s bars every "
        f"{forecast.refit_minutes:g} min, the next {forecast.horizon_bars} bars (log "
        f"{paths.shown(LOG_DIR)}/forecaster.log)")
    return alerts, forecaster
