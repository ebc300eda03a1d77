"""What the chaos tests do to a private stack's processes, and how they see Flink recover."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from marketpulse.config import Settings
from tests import support

TASKMANAGER_CLASS = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"
RECOVERY_TIMEOUT = 180


def stack_dir() -> Path:
    return Path(os.environ["MARKETPULSE_STACK_DIR"])


def java_pids(main_class: str, folder: Path) -> list[int]:
    """Live java processes running main_class whose command line names folder (every daemon of a stack
    carries its own state folder in its log settings)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if main_class in cmdline and str(folder) in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def taskmanager_pid(settings: Settings) -> int:
    pids = java_pids(TASKMANAGER_CLASS, stack_dir())
    assert len(pids) == 1, f"expected one TaskManager of {stack_dir()}, found {pids}"
    return pids[0]


def wait_new_taskmanager(settings: Settings, old_pid: int) -> int:
    """Waits until a TaskManager other than old_pid runs and has registered its slots; returns its pid."""
    def registered():
        pids = [pid for pid in java_pids(TASKMANAGER_CLASS, stack_dir()) if pid != old_pid]
        overview = support.flink_rest(settings, "/overview")
        return pids[0] if pids and overview["taskmanagers"] >= 1 else None

    return support.wait_for(registered, RECOVERY_TIMEOUT, "the supervisor to start a new TaskManager",
                            interval=1)


def assert_no_terminal_state(settings: Settings, job_ids: Iterable[str]) -> None:
    for job_id in job_ids:
        state = support.flink_rest(settings, f"/jobs/{job_id}")["state"]
        assert state not in ("FAILED", "CANCELED", "FINISHED"), \
            f"job {job_id} is {state}:\n{support.job_exceptions(settings, job_id)}"


def wait_jobs_running(settings: Settings, job_ids: Iterable[str]) -> None:
    """Until every job and all of its tasks run again (restored from the last checkpoint)."""
    job_ids = list(job_ids)

    def running():
        assert_no_terminal_state(settings, job_ids)
        return all(all(vertex["status"] == "RUNNING"
                       for vertex in support.flink_rest(settings, f"/jobs/{job_id}")["vertices"])
                   for job_id in job_ids)

    support.wait_for(running, RECOVERY_TIMEOUT, f"jobs {job_ids} running", interval=1)


PYTHON_CLOSE_FATAL = "Reference count must not be negative"


def _taskmanager_logs() -> list[str]:
    return [log.read_text(errors="replace")
            for log in (stack_dir() / "flink" / "log").glob("flink-*taskexecutor*.log*")]


def known_python_close_fatals() -> int:
    """TaskManager exits caused by PyFlink 2.2's Beam runner throwing in a failed task's cleanup
    (DefaultJobBundleFactory.close -> 'Reference count must not be negative'), which Flink's Task.doRun
    turns into a fatal TaskManager error unless the flink-ext agent is loaded: counted from the TaskManager
    logs of the stack in os.environ, to name the cause when a TaskManager exit fails a test."""
    count = 0
    for text in _taskmanager_logs():
        for fatal in text.split("FATAL - exception in exception handler")[1:]:
            count += PYTHON_CLOSE_FATAL in fatal[:3000]
    # Task and TaskExecutor both log the same fatal error: count TaskManager exits, not log lines.
    return count // 2


def python_close_guards() -> int:
    """How often the flink-ext agent's PythonSharedResources kept that same exception from ending the
    TaskManager (its WARN line in the TaskManager logs of the stack in os.environ)."""
    return sum(text.count(f"ignoring Beam's '{PYTHON_CLOSE_FATAL}") for text in _taskmanager_logs())
