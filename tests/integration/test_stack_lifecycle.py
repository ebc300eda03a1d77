"""`up`, `up` again, `down` and the bad situations, on a second, private stack (its own ports and state
folder) so the shared stack the other tests use is never touched."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests import support

pytestmark = pytest.mark.integration

# MARKETPULSE_LIFECYCLE_PORT_BASE moves the private stack's ports (two checkouts testing at once).
PORT_BASE = int(os.environ.get("MARKETPULSE_LIFECYCLE_PORT_BASE", "10000"))
PORTS = {name: PORT_BASE + offset for name, offset in support.PRIVATE_PORT_OFFSETS.items()}


@pytest.fixture
def private_stack():
    """Environment for a stack under .stack/lifecycle-<id> on PORTS; stopped and removed afterwards."""
    stack_dir = support.REPO / ".stack" / f"lifecycle-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ)
    env.update(support.private_stack_environment(PORT_BASE, stack_dir, slots=2))
    yield stack_dir, env
    stack_cli("down", env=env)
    shutil.rmtree(stack_dir, ignore_errors=True)


def stack_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stack", *args], cwd=support.REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def processes_mentioning(path: Path) -> list[str]:
    """Command lines of live processes that name `path` (our daemons all carry their state dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if str(path) in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def status_tables(stdout: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """`status` output as ({component: health}, {process: {pid, state, uptime, restarts, last_exit}})."""
    lines = stdout.splitlines()
    end = lines.index("") if "" in lines else len(lines)
    health = {line[:15].strip(): line[15:].split()[1] for line in lines[1:end]}
    processes = {}
    for line in lines[end + 3:]:  # blank, "supervisor pid ...", header
        if line.startswith("resubmitted") or not line:  # then the TaskManagers as REST lists them
            break
        name, pid, state, uptime, restarts, *last = line.split(maxsplit=5)
        processes[name] = {"pid": pid, "state": state, "uptime": uptime, "restarts": restarts,
                           "last_exit": last[0] if last else ""}
    return health, processes


def assert_one_clear_line(result: subprocess.CompletedProcess, *expected: str) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def test_up_up_down_and_the_bad_situations(private_stack):
    stack_dir, env = private_stack

    # A port taken by someone else: one line naming the port, nothing started.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", PORTS["postgres"]))
        squatter.listen()
        result = stack_cli("up", env=env)
    assert_one_clear_line(result, f"port {PORTS['postgres']} (PostgreSQL) is already in use")
    assert processes_mentioning(stack_dir) == []

    # Java missing: one line saying what to install.
    no_java = dict(env, PATH="/nonexistent")
    assert_one_clear_line(stack_cli("up", env=no_java), "java not found", "openjdk-17")

    # Fresh start: everything comes up and the wall time is printed.
    started = time.monotonic()
    result = stack_cli("up", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    wall = re.search(r"stack up in ([0-9.]+)s \(started: postgres, kafka, flink, sqlgateway, prometheus\)",
                     result.stderr)
    assert wall, result.stderr
    print(f"\nprivate stack: fresh `up` took {float(wall.group(1)):.1f}s "
          f"({time.monotonic() - started:.1f}s with the CLI)")
    status = stack_cli("status", env=env)
    health, processes = status_tables(status.stdout)
    assert status.returncode == 0 and list(health.values()) == ["up"] * 5, status.stdout
    # Each process runs under the supervisor, started once.
    assert {name: (row["state"], row["restarts"]) for name, row in processes.items()} == {
        name: ("up", "0") for name in ("postgres", "kafka", "jobmanager", "taskmanager", "sqlgateway",
                                       "prometheus")}, \
        status.stdout

    # Again: a no-op that says so.
    again = stack_cli("up", env=env)
    assert again.returncode == 0 and "stack already up, nothing to do" in again.stderr, again.stderr
    assert "starting" not in again.stderr
    print(again.stderr.strip().splitlines()[0])

    # Down: nothing of ours is left running; status says so and fails.
    down = stack_cli("down", env=env)
    assert "stopped: prometheus, sqlgateway, flink, kafka, postgres" in down.stderr, down.stderr
    assert processes_mentioning(stack_dir) == []
    after = stack_cli("status", env=env)
    assert after.returncode == 1 and after.stdout.count("DOWN") == 5, after.stdout
    assert "no supervisor running" in after.stderr

    # A component that fails to start: the error names it and its log file.
    (stack_dir / "kafka" / "data" / "meta.properties").write_text("version=99\nnode.id=1\n")
    broken = stack_cli("up", env=env)
    line = assert_one_clear_line(broken, "Kafka broker exited during start-up; see ")
    log_file = Path(line.split("see ", 1)[1].strip())
    assert log_file.exists() and log_file.stat().st_size > 0
    stack_cli("down", env=env)
    assert processes_mentioning(stack_dir) == []
