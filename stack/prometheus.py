"""Prometheus, from Debian's `prometheus` package, as a stack component: it scrapes Flink's Prometheus
reporter (JobManager and TaskManager), the generator, the alert service and the dashboard, with the targets
of conf/pipeline.toml [metrics] rendered into conf/prometheus/prometheus.yml. Its data (a TSDB kept 2 days)
lives in .stack/prometheus; its UI and HTTP API answer on [metrics] prometheus_port."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from string import Template

from marketpulse.config import Settings
from stack import paths
from stack.errors import StackError
from stack.proc import Program, port_open, read_pid, stop_pid

NAME = "prometheus"
PROGRAMS = ("prometheus",)
READY_TIMEOUT_S = 60.0
HOME = paths.STACK_DIR / "prometheus"
DATA_DIR = HOME / "data"
CONFIG = HOME / "prometheus.yml"
PID_FILE = HOME / "prometheus.pid"
LOG_FILE = HOME / "prometheus.log"
TEMPLATE = paths.CONF_DIR / "prometheus" / "prometheus.yml"
RETENTION = "2d"


def binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists()
                                           else None)
    if not found:
        raise StackError("prometheus not found: run `make setup` (installs Debian's prometheus package)")
    return found


def host_port(settings: Settings) -> tuple[str, int]:
    return settings.flink.bind_host, int(settings.metrics.prometheus_port)


def url(settings: Settings) -> str:
    host, port = host_port(settings)
    return f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"


def render_config(settings: Settings, target: Path = CONFIG) -> Path:
    """conf/prometheus/prometheus.yml with this machine's targets ([metrics] settings). Pure but for the
    file it writes."""
    m = settings.metrics
    text = Template(TEMPLATE.read_text()).substitute(
        scrape_interval=f"{int(m.scrape_interval_seconds)}s", flink_targets=json.dumps(list(m.flink_targets)),
        generator_target=m.generator_target, alerts_target=m.alerts_target,
        dashboard_target=m.dashboard_target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def argv(settings: Settings) -> list[str]:
    host, port = host_port(settings)
    return [binary(), f"--config.file={CONFIG}", f"--storage.tsdb.path={DATA_DIR}",
            f"--storage.tsdb.retention.time={RETENTION}", f"--web.listen-address={host}:{port}"]


def pids() -> list[int]:
    found = read_pid(PID_FILE)
    return [] if found is None else [found]


def program_pids() -> dict[str, list[int]]:
    return {"prometheus": pids()}


def running() -> bool:
    return bool(pids())


def log_hint() -> Path:
    return LOG_FILE


def prepare(settings: Settings) -> None:
    binary()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    render_config(settings)


def programs(settings: Settings) -> list[Program]:
    return [Program(name="prometheus", title="Prometheus", argv=argv(settings), log_file=LOG_FILE,
                    pid_file=PID_FILE, stop_timeout=30.0)]


def ports(settings: Settings) -> list[tuple[int, str]]:
    return [(host_port(settings)[1], "Prometheus")]


def ready(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(url(settings) + "/-/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False



def healthy(settings: Settings) -> bool:
    return running() and port_open(host_port(settings)[1], "127.0.0.1")


def stop(settings: Settings) -> bool:
    alive = pids()
    for pid in alive:
        stop_pid(pid, timeout=30)
    PID_FILE.unlink(missing_ok=True)
    return bool(alive)


def query(settings: Settings, promql: str, timeout: float = 5) -> list[dict]:
    """The result vector of an instant PromQL query through the HTTP API ([] when nothing matches)."""
    from urllib.parse import urlencode

    with urllib.request.urlopen(f"{url(settings)}/api/v1/query?{urlencode({'query': promql})}",
                                timeout=timeout) as response:
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise StackError(f"Prometheus query {promql!r} failed: {body.get('error')}")
    return body["data"]["result"]


def run_foreground(settings: Settings) -> None:
    """Container entry point (docker-compose.yml's prometheus service): the rendered configuration, then
    this process becomes Prometheus."""
    prepare(settings)
    args = argv(settings)
    os.execv(args[0], args)
