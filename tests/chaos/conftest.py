"""The chaos tests' private stack: `chaos_stack` starts a whole MarketPulse stack (PostgreSQL, Kafka, Flink,
the supervisor when the stack has one) of its own, so the shared stack other tests and people use is never
killed. One stack per test module, in a fresh folder .stack/chaos-<module> (left in place after `down`, for
its logs), on the ports MARKETPULSE_CHAOS_PORT_BASE (default 20000) + 5432/9092/9093/8081/6123/8083/9090/9249.
The base keeps every port below Linux's ephemeral range (32768-60999): a listening port in that
range can be taken by any outgoing connection's local port, and a Kafka broker then fails to bind it.

While the module runs, os.environ points at that stack (MARKETPULSE_STACK_DIR and the ports), so the shared
helpers that start processes (tests.pipeline.generate/submit_sql/submit_datastream, support.flink_run) and
tests.chaos.harness act on it; the fixture yields its Settings and restores the environment afterwards.

The helpers below act on the processes of the stack in os.environ: component_pid(), taskmanager_exits(),
outage() (kill -9 or stop a component, keep it down, bring it back).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from marketpulse.config import Settings, load_settings
from tests import support
from tests.chaos import harness

PORT_OFFSETS = {"postgres": 5432, "kafka": 9092, "controller": 9093, "rest": 8081, "rpc": 6123,
                "gateway": 8083, "prometheus": 9090, "reporter": 9249}
SLOTS = 8
READY_TIMEOUT = 120


def chaos_environment(base: int, stack_dir: Path) -> dict[str, str]:
    ports = {name: base + offset for name, offset in PORT_OFFSETS.items()}
    return {
        "MARKETPULSE_STACK_DIR": str(stack_dir),
        "MARKETPULSE_POSTGRES_PORT": str(ports["postgres"]),
        "MARKETPULSE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports['kafka']}",
        "MARKETPULSE_KAFKA_CONTROLLER_PORT": str(ports["controller"]),
        "MARKETPULSE_FLINK_REST_URL": f"http://127.0.0.1:{ports['rest']}",
        "MARKETPULSE_FLINK_RPC_PORT": str(ports["rpc"]),
        "MARKETPULSE_FLINK_SQL_GATEWAY_URL": f"http://127.0.0.1:{ports['gateway']}",
        "MARKETPULSE_FLINK_TASKMANAGER_SLOTS": str(SLOTS),
        "MARKETPULSE_METRICS_PROMETHEUS_PORT": str(ports["prometheus"]),
        "MARKETPULSE_METRICS_FLINK_REPORTER_PORTS": f"{ports['reporter']}-{ports['reporter'] + 1}",
    }


def stack_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m stack ARGS` on the stack in os.environ."""
    return subprocess.run([sys.executable, "-m", "stack", *args], cwd=support.REPO, capture_output=True,
                          text=True, timeout=timeout)


def stack_python(code: str) -> str:
    """Runs code in a fresh interpreter (the stack's modules read MARKETPULSE_STACK_DIR when imported, and
    this process imported them for the shared stack); returns what it printed."""
    result = subprocess.run([sys.executable, "-c", code], cwd=support.REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


@pytest.fixture(scope="module")
def chaos_stack(request) -> Settings:
    base = int(os.environ.get("MARKETPULSE_CHAOS_PORT_BASE", "20000"))
    stack_dir = support.REPO / ".stack" / f"chaos-{request.module.__name__.rsplit('.', 1)[-1]}"
    env = chaos_environment(base, stack_dir)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        stack_cli("down")  # a stack a crashed run left behind in this folder
        shutil.rmtree(stack_dir, ignore_errors=True)
        started = time.monotonic()
        result = stack_cli("up")
        if result.returncode != 0:
            pytest.fail(f"`python -m stack up` of the chaos stack failed:\n{result.stderr[-3000:]}",
                        pytrace=False)
        print(f"\nchaos stack {stack_dir.name} on port base {base} up in {time.monotonic() - started:.0f}s")
        yield load_settings()
    finally:
        stack_cli("down")
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- the stack's processes ----------------------------------------------------------------------------

def component_pid(component: str) -> int | None:
    """The live pid of 'postgres' (the postmaster) or 'kafka' (the broker) of the stack in os.environ."""
    found = stack_python(f"from stack import {component}; print(*{component}.pids()[:1])")
    return int(found) if found else None


def supervisor_pid() -> int | None:
    """The stack's supervisor daemon, if this version of the stack runs one."""
    found = stack_python("import importlib.util\n"
                         "if importlib.util.find_spec('stack.supervisor'):\n"
                         "    from stack import supervisor; print(supervisor.pid() or '')")
    return int(found) if found else None


def taskmanager_exits(first_pid: int) -> int:
    """How often the TaskManager has exited since first_pid ran: the supervisor's restart count when it
    keeps one, else 0 or 1 by whether first_pid still runs."""
    count = stack_python("import importlib.util, json\n"
                         "if importlib.util.find_spec('stack.supervisor'):\n"
                         "    from stack import supervisor\n"
                         "    print(supervisor.program_state('taskmanager').get('restarts', ''))")
    alive = first_pid in harness.java_pids(harness.TASKMANAGER_CLASS, harness.stack_dir())
    return max(int(count) if count else 0, 0 if alive else 1)


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: its parent, the frozen supervisor, reaps it later)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


@contextmanager
def _supervisor_frozen():
    """A supervisor would restart what we take down within a second: it is paused (SIGSTOP) while the
    component is down, and on SIGCONT restarts it as it would after a real crash."""
    pid = supervisor_pid()
    if pid:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)


def outage(settings: Settings, component: str, seconds: float) -> float:
    """Takes 'kafka' down with SIGKILL or 'postgres' down with a fast shutdown (SIGINT, = pg_ctl stop -m
    fast), keeps it down `seconds`, brings it back (the supervisor's restart, else `python -m stack up`) and
    waits until it serves again; returns the seconds it was unavailable."""
    ready = {"kafka": _kafka_ready, "postgres": _postgres_ready}[component]
    pid = component_pid(component)
    assert pid, f"{component} of {harness.stack_dir()} is not running"
    with _supervisor_frozen() as supervised:
        os.kill(pid, signal.SIGKILL if component == "kafka" else signal.SIGINT)
        down_at = time.monotonic()
        support.wait_for(lambda: _gone(pid), 60, f"{component} pid {pid} to exit", interval=0.2)
        time.sleep(max(0.0, seconds - (time.monotonic() - down_at)))
    if not supervised:
        result = stack_cli("up")
        assert result.returncode == 0, result.stderr[-3000:]
    support.wait_for(lambda: ready(settings), READY_TIMEOUT, f"{component} serving again", interval=0.5)
    return time.monotonic() - down_at


def _kafka_ready(settings: Settings) -> bool:
    from stack.kafka import metadata_ready  # settings only: no stack paths

    return metadata_ready(settings)


def _postgres_ready(settings: Settings) -> bool:
    try:
        support.query(settings, "SELECT 1")
        return True
    except Exception:  # refused or still starting up
        return False
