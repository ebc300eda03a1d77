"""Small process and port helpers shared by the components."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stack.errors import StackError
from stack.log import say


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_owner(port: int) -> str:
    """'pid 123 (java)' for the process listening on port, if `ss` can tell; else ''."""
    if not shutil.which("ss"):
        return ""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    # users:(("java",pid=3418,fd=144))
    if "pid=" in out:
        name = out.split('(("', 1)[1].split('"', 1)[0] if '(("' in out else "?"
        pid = out.split("pid=", 1)[1].split(",", 1)[0]
        return f"pid {pid} ({name})"
    return ""


def ensure_port_free(port: int, what: str) -> None:
    if port_open(port):
        owner = port_owner(port)
        raise StackError(
            f"port {port} ({what}) is already in use by another process"
            + (f": {owner}" if owner else "")
            + f". Stop it, or move {what} to another port (see conf/ and README 'Ports')."
        )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return False


def read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def start_daemon(cmd: list[str], log_file: Path, pid_file: Path, env: dict | None = None) -> int:
    """Starts cmd detached from our session (it outlives this command), stdout+stderr to log_file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM, wait, then SIGKILL: Kafka and Postgres flush on SIGTERM."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def log_excerpt(log_file: Path | str | None, lines: int = 5) -> list[str]:
    """The last error lines of a component's log (or its last lines when none reads as an error): printed
    with a start-up failure, so a user or a CI log sees the cause without the file."""
    try:
        tail = Path(log_file).read_text(errors="replace").splitlines()[-400:] if log_file else []
    except OSError:
        return []
    markers = ("ERROR", "FATAL", "Exception", "error:", "Error:")
    errors = [line for line in tail if any(marker in line for marker in markers)]
    return [line[:300] for line in (errors or tail)[-lines:]]


def wait_until(check: Callable[[], bool], timeout: float, what: str, log_file: Path | None = None,
               alive: Callable[[], bool] | None = None, interval: float = 0.3) -> None:
    """Polls check() until true. Fails fast, naming the log, if the process died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            for line in log_excerpt(log_file):
                say(f"  | {line}")
            raise StackError(f"{what} exited during start-up; see {log_file}")
        time.sleep(interval)
    raise StackError(f"{what} did not become ready within {timeout:.0f}s; see {log_file}")


def require_java() -> str:
    java = shutil.which("java")
    if not java:
        raise StackError(
            "java not found on PATH: Kafka and Flink need a Java 17 runtime "
            "(Debian: apt-get install openjdk-17-jre-headless)"
        )
    return java


@dataclass
class Program:
    """One long-running process as the supervisor runs it: in the foreground, as its child."""

    name: str                      # postgres | kafka | jobmanager | taskmanager
    title: str                     # as error messages name it ("Kafka broker")
    argv: list[str]
    log_file: Path                 # stdout+stderr of the process (appended)
    env: dict[str, str] | None = None
    user: str | None = None        # run as this user (PostgreSQL refuses root)
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 30.0
    pid_file: Path | None = None   # written for tools that look there (kafka.pid)
    cwd: Path | None = None
    log_hint: Path | None = None   # the log a person should read, if not log_file
