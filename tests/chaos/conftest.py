"""The chaos tests' private stack: `chaos_stack` starts a whole MarketPulse stack (PostgreSQL, Kafka, Flink,
the supervisor when the stack has one) of its own (tests.support.private_stack), so the shared stack other
tests and people use is never killed. One stack per test module, in a fresh folder .stack/chaos-<module>, on
the ports MARKETPULSE_CHAOS_PORT_BASE (default 20000) + support.PRIVATE_PORT_OFFSETS: below Linux's ephemeral
range.

While the module runs, os.environ points at that stack, so the shared helpers that start processes
(tests.pipeline.generate/submit_sql/submit_datastream, support.flink_run) and tests.chaos.harness act on it.

The helpers below act on the processes of the stack in os.environ: component_pid(), taskmanager_exits(),
outage() (kill -9 or stop a component, keep it down, bring it back).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from marketpulse.config import Settings
from tests import support
from tests.chaos import harness

SLOTS = 8
READY_TIMEOUT = 120


def stack_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m stack ARGS` on the stack in os.environ."""
    return support.stack_cli(*args, timeout=timeout)


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
    name = f"chaos-{request.module.__name__.rsplit('.', 1)[-1]}"
    with support.private_stack(name, base, SLOTS) as settings:
        yield settings


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
