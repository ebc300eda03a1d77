"""The supervisor on a private stack (real processes, own ports): kill -9 the TaskManager, Kafka, PostgreSQL
and the JobManager; each comes back alone, and a registered job lost with the JobManager is resubmitted from
its newest retained checkpoint. One test, because a private stack costs ~30-70 s to start."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request

import psycopg2
import pytest

from marketpulse.config import load_settings, postgres_connect_args
from stack import supervisor
from tests.integration import test_stack_lifecycle
from tests.integration.test_stack_lifecycle import (
    PORTS,
    processes_mentioning,
    stack_cli,
    status_tables,
)

pytestmark = pytest.mark.integration
private_stack = test_stack_lifecycle.private_stack  # the same fixture: ports, folder, down + cleanup

COUNTER_SQL = "tests/integration/flink/supervised_counter.sql"
COUNTER_JOB = "marketpulse-supervised-counter"
REST = f"http://127.0.0.1:{PORTS['rest']}"


def rest(path: str):
    with urllib.request.urlopen(REST + path, timeout=5) as response:
        return json.loads(response.read())


def rest_or_none(path: str):
    try:
        return rest(path)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


def pg(env: dict):
    """The private stack's database as its owner (password from that stack's .stack/secrets)."""
    args = postgres_connect_args(load_settings(environ=env), "owner", env)
    return psycopg2.connect(**args, connect_timeout=2)


def counted(env: dict) -> int | None:
    try:
        with pg(env) as conn, conn.cursor() as cur:
            cur.execute("SELECT COALESCE(SUM(n), 0) FROM supervised_counter")
            return int(cur.fetchone()[0])
    except psycopg2.Error:
        return None


def job_running(job_id: str) -> bool:
    """RUNNING with every task running (not merely scheduled while a TaskManager is missing)."""
    job = rest_or_none(f"/jobs/{job_id}")
    return bool(job) and job["state"] == "RUNNING" and all(
        vertex["status"] == "RUNNING" for vertex in job["vertices"])


def taskmanager_ids() -> set[str]:
    return {tm["id"] for tm in (rest_or_none("/taskmanagers") or {"taskmanagers": []})["taskmanagers"]}


def completed_checkpoints(job_id: str) -> int:
    found = rest_or_none(f"/jobs/{job_id}/checkpoints")
    return found["counts"]["completed"] if found else 0


def registry_entry(stack_dir) -> dict:
    return json.loads((stack_dir / "jobs" / "registry.json").read_text())["jobs"][COUNTER_JOB]


def newest_complete_checkpoint(stack_dir, job_id: str):
    """Independently of stack/registry.py: the highest chk-N holding a _metadata file."""
    folder = stack_dir / "flink" / "checkpoints" / job_id
    numbers = [int(p.name[4:]) for p in folder.glob("chk-*") if (p / "_metadata").is_file()]
    return folder / f"chk-{max(numbers)}"


def processes(env) -> dict[str, dict[str, str]]:
    return status_tables(stack_cli("status", env=env).stdout)[1]


def test_supervisor_restarts_only_what_died_and_resubmits_lost_jobs(private_stack):
    stack_dir, env = private_stack
    try:
        exercise(stack_dir, env)
    finally:  # the fixture deletes the folder: keep the supervisor's account in the test output
        log = supervisor.log_file(stack_dir)
        print("\n" + log.read_text() if log.exists() else "no supervisor log")


def exercise(stack_dir, env) -> None:
    figures = {}
    started = time.monotonic()
    result = stack_cli("up", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    figures["fresh up"] = time.monotonic() - started

    # A small streaming job with keyed state, submitted the way a person does (`make sql`): registered.
    with pg(env) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE supervised_counter (k INT PRIMARY KEY, n BIGINT NOT NULL)")
    result = stack_cli("sql", COUNTER_SQL, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    job_id = registry_entry(stack_dir)["job_ids"][-1]
    wait_for(lambda: job_running(job_id) and completed_checkpoints(job_id) >= 2, 90, "two checkpoints")

    # 1. The TaskManager dies: a new TaskManager, the same JobManager and the same job, RUNNING again.
    jm_pid = supervisor.program_pid("jobmanager", stack_dir)
    tm_pid = supervisor.program_pid("taskmanager", stack_dir)
    old_tms = taskmanager_ids()
    os.kill(tm_pid, signal.SIGKILL)
    killed = time.monotonic()
    supervisor.wait_restarted("taskmanager", tm_pid, timeout=30, stack_dir=stack_dir)
    figures["TaskManager restarted (new process)"] = time.monotonic() - killed
    # The JobManager's view lags (heartbeats): wait until it has dropped the dead TaskManager, registered the
    # new one, and the job runs there.
    wait_for(lambda: len(taskmanager_ids()) == 1 and not taskmanager_ids() & old_tms, 120,
             "the new TaskManager registered, the dead one gone")
    figures["new TaskManager registered, dead one dropped"] = time.monotonic() - killed
    wait_for(lambda: job_running(job_id), 120, "the job RUNNING again on the new TaskManager")
    figures["job RUNNING again after TaskManager kill"] = time.monotonic() - killed
    assert supervisor.program_pid("jobmanager", stack_dir) == jm_pid
    assert [job["id"] for job in rest("/jobs")["jobs"]] == [job_id]  # same job, not resubmitted
    table = processes(env)
    assert (table["taskmanager"]["restarts"], table["jobmanager"]["restarts"]) == ("1", "0"), table
    assert table["taskmanager"]["last_exit"].startswith("killed by SIGKILL"), table

    # 2. Kafka and PostgreSQL die: both restarted, each alone.
    before = counted(env)
    for name in ("kafka", "postgres"):
        old = supervisor.program_pid(name, stack_dir)
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        supervisor.wait_restarted(name, old, timeout=30, stack_dir=stack_dir)
        figures[f"{name} restarted (new process)"] = time.monotonic() - killed
    wait_for(lambda: (counted(env) or 0) > before, 120, "PostgreSQL accepting the job's writes again")
    wait_for(lambda: stack_cli("status", env=env).returncode == 0, 90, "every component healthy")
    table = processes(env)
    for name in ("kafka", "postgres"):
        assert table[name]["restarts"] == "1", table
        assert table[name]["last_exit"].startswith("killed by SIGKILL"), table
    assert table["jobmanager"]["restarts"] == "0"
    assert supervisor.program_pid("jobmanager", stack_dir) == jm_pid

    # 3. The JobManager dies, and with it the session cluster's memory of the job: the supervisor starts a
    # new one and resubmits the job from its newest retained checkpoint.
    wait_for(lambda: job_running(job_id), 120, "the job RUNNING before the JobManager kill")
    wait_for(lambda: completed_checkpoints(job_id) >= 1, 60, "a checkpoint after the PostgreSQL restart")
    # (Until issue 10's sink fix, a PostgreSQL outage can also make the TaskManager exit; the supervisor
    # restarts it like any exit. What matters here: the JobManager's restart restarts nothing else.)
    restarts_before = {name: row["restarts"] for name, row in processes(env).items()}
    os.kill(jm_pid, signal.SIGKILL)
    killed = time.monotonic()
    expected = newest_complete_checkpoint(stack_dir, job_id)  # no checkpoint completes without a JobManager
    counted_at_kill = counted(env)
    supervisor.wait_restarted("jobmanager", jm_pid, timeout=30, stack_dir=stack_dir)
    figures["JobManager restarted (new process)"] = time.monotonic() - killed
    new_id = wait_for(lambda: (registry_entry(stack_dir)["job_ids"][-1] != job_id
                               and registry_entry(stack_dir)["job_ids"][-1]), 240, "the job resubmitted")
    wait_for(lambda: job_running(new_id), 120, "the resubmitted job RUNNING")
    figures["job RUNNING again after JobManager kill"] = time.monotonic() - killed
    restored = rest(f"/jobs/{new_id}/checkpoints")["latest"]["restored"]
    assert restored["external_path"].removeprefix("file:") == str(expected), restored
    assert registry_entry(stack_dir)["restore_path"] == str(expected)
    # The state came back: counts go on from the checkpoint's, they do not start again from zero.
    wait_for(lambda: completed_checkpoints(new_id) >= 1, 60, "a checkpoint of the resubmitted job")
    assert counted(env) >= counted_at_kill * 0.5, (counted(env), counted_at_kill)
    restarts_after = {name: row["restarts"] for name, row in processes(env).items()}
    assert restarts_after == dict(restarts_before, jobmanager="1"), (restarts_before, restarts_after)
    assert f"'{COUNTER_JOB}' resubmitted as {new_id}" in supervisor.log_file(stack_dir).read_text()

    # 4. A deliberate cancel is remembered: the registry will not bring the job back.
    result = stack_cli("cancel", new_id, env=env)
    assert result.returncode == 0, result.stderr
    assert registry_entry(stack_dir)["state"] == "cancelled"

    # 5. Down leaves nothing behind: no supervisor, no child, no helper process.
    result = stack_cli("down", env=env)
    assert "stopped: prometheus, sqlgateway, flink, kafka, postgres" in result.stderr, result.stderr
    assert processes_mentioning(stack_dir) == []
    assert supervisor.pid(stack_dir) is None
    print("\nsupervisor figures (s): " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))
