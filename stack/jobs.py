"""Submitting MarketPulse's Flink jobs to the session cluster, once: a job already RUNNING under the same
name is left alone, so `make demo` and docker-compose's `jobs` service can run again safely.

Every submission is recorded in the job registry (stack/registry.py) with what it takes to submit it again;
a job the registry still holds as active but that is not running resumes from its newest retained
checkpoint (the supervisor does this after a JobManager restart; `submit-all` does it too)."""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path

from marketpulse.config import Settings
from marketpulse.sqltemplate import TemplateError, compose
from stack import flink, jarrun, paths, registry, sqlgateway
from stack.errors import StackError
from stack.log import say
from stack.sql import render, run_sql_script

PIPELINE_NAME = re.compile(r"SET\s+'pipeline\.name'\s*=\s*'([^']+)'", re.IGNORECASE)
LIVE_STATES = ("RUNNING", "CREATED", "INITIALIZING", "RESTARTING")


def running_jobs(settings: Settings) -> dict[str, str]:
    """{job name: job id} of the cluster's RUNNING (or starting) jobs."""
    jobs = flink.rest(settings, "/jobs/overview")["jobs"]
    return {job["name"]: job["jid"] for job in jobs if job["state"] in LIVE_STATES}


def composed(script: Path) -> str:
    """The script with its includes (marketpulse/sqltemplate.py: compose); a broken include is a
    StackError."""
    try:
        return compose(script)
    except TemplateError as err:
        raise StackError(f"{script}: {err}") from None


def sql_job_name(script: Path) -> str:
    found = PIPELINE_NAME.search(composed(script))
    if not found:
        raise StackError(f"{script} sets no 'pipeline.name': the job could not be recognised when running")
    return found.group(1)


def _lock():
    return registry.submission_lock(on_wait=lambda: say("waiting for a submission in progress to finish "
                                                        "(another command, or the supervisor resubmitting)"))


def _last_state(name: str, savepoint: str | None, resume: bool) -> str | None:
    """The explicit savepoint, else (resume) the newest checkpoint of the registry's active entry."""
    if savepoint or not resume:
        return savepoint
    entry = registry.load().get(name)
    if entry and entry.get("state") == registry.ACTIVE:
        found = registry.restore_point(entry, flink.CHECKPOINT_DIR)
        if found:
            say(f"Flink: '{name}' resumes from its last state {found}")
        return found
    return None


def submit_datastream(settings: Settings, savepoint: str | None = None, args: list[str] | None = None,
                      resume: bool = True) -> str | None:
    """Submits jobs/market_metrics.py detached; returns its job id (None if it was running already)."""
    name, script = settings.jobs.datastream_name, settings.jobs.datastream
    args = list(args or [])
    with _lock():
        running = running_jobs(settings)
        if name in running:
            say(f"Flink: '{name}' is already running")
            _adopt(name, "datastream", script, running[name], args)
            return None
        job_file = paths.REPO / script
        if not job_file.exists():
            raise StackError(f"DataStream job not found: {job_file}")
        savepoint = _last_state(name, savepoint, resume)
        restore = ["-s", savepoint] if savepoint else []
        # The Flink CLI parses options up to the first one it does not know: behind -py FILE, a job option
        # Flink also has (--parallelism is its -p) would be taken by Flink and never reach the job. A
        # job-only option first (the job's default, which restored partitions ignore anyway) ends that.
        program = ["--start-from", "committed", *args] if args else []
        if settings.flink.submit_python_over_rest and jarrun.can_submit(os.environ):
            say(f"Flink: submitting '{name}' through the REST API (PythonDriver in the JobManager: "
                f"{' '.join(['-py', script] + program)}{' from ' + savepoint if savepoint else ''})")
            started = time.monotonic()
            job_id = jarrun.run_python_job(settings, job_file, program, savepoint)
            say(f"Flink: '{name}' submitted as {job_id} in {time.monotonic() - started:.1f}s")
            registry.record(name, "datastream", script, job_id, args=args, restore_path=savepoint)
            return job_id
        say(f"Flink: submitting '{name}' (flink run -d {' '.join(restore + ['-py', script] + program)})")
        command = [flink.bin_path("flink"), "run", "-d", *restore, "-py", str(job_file), *program]
        result = subprocess.run(command, env=flink.flink_env(), capture_output=True, text=True,
                                cwd=paths.REPO)
        job_ids = re.findall(r"JobID ([0-9a-f]{32})", result.stdout)
        if result.returncode != 0 or not job_ids:
            log = flink.LOG_DIR / "submit-datastream.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(result.stdout + result.stderr)
            raise StackError(f"submitting {script} failed; see {log}")
        registry.record(name, "datastream", script, job_ids[-1], args=args, restore_path=savepoint)
        return job_ids[-1]


def submit_sql(settings: Settings, script: str, savepoint: str | None = None,
               variables: dict[str, str] | None = None, resume: bool = True) -> str | None:
    path = paths.REPO / script
    if not path.exists():
        raise StackError(f"SQL script not found: {path}")
    name = sql_job_name(path)
    with _lock():
        running = running_jobs(settings)
        if name in running:
            say(f"Flink: '{name}' is already running")
            _adopt(name, "sql", script, running[name], [], variables)
            return None
        savepoint = _last_state(name, savepoint, resume)
        if sqlgateway.healthy(settings):  # a few REST calls instead of a sql-client.sh JVM
            say(f"Flink: submitting '{name}' through the SQL Gateway ({settings.flink.sql_gateway_url})")
            started = time.monotonic()
            sqlgateway.submit(settings, render(path, settings, variables, savepoint).read_text(),
                              say=lambda _line: None)
            say(f"Flink: '{name}' submitted through the gateway in {time.monotonic() - started:.1f}s")
        else:
            result = run_sql_script(settings, str(path), variables=variables, capture=True,
                                    savepoint=savepoint)
            if result.returncode != 0 or "[ERROR]" in result.stdout:
                log = flink.LOG_DIR / f"submit-{path.stem}.log"
                log.write_text(result.stdout + result.stderr)
                raise StackError(f"sql-client.sh -f {script} failed; see {log}")
        job_id = running_jobs(settings).get(name)
        registry.record(name, "sql", script, job_id, variables=variables, restore_path=savepoint)
        return job_id


def _adopt(name: str, kind: str, script: str, job_id: str, args: list[str],
           variables: dict[str, str] | None = None) -> None:
    """A pipeline job running but unknown to the registry (submitted by hand or by older code) is recorded,
    so a JobManager restart does not lose it either."""
    entry = registry.load().get(name)
    if not entry or entry.get("state") != registry.ACTIVE or job_id not in entry.get("job_ids", []):
        registry.record(name, kind, script, job_id, args=args, variables=variables,
                        restore_path=(entry or {}).get("restore_path"))


def submit_all(settings: Settings) -> list[str]:
    """The DataStream job and every SQL script of [jobs] in conf/pipeline.toml; returns new job ids. A job
    the registry holds as active resumes from its newest retained checkpoint."""
    from concurrent.futures import ThreadPoolExecutor

    with _lock():
        # Each sql-client.sh is a JVM that spends most of its ~20 s starting and planning: side by side.
        with ThreadPoolExecutor(max_workers=len(settings.jobs.sql_scripts) + 1) as pool:
            futures = [pool.submit(submit_datastream, settings)]
            futures += [pool.submit(submit_sql, settings, script) for script in settings.jobs.sql_scripts]
            submitted = [future.result() for future in futures]
    return [job_id for job_id in submitted if job_id]


def lost_jobs(settings: Settings) -> list[dict]:
    """Active registry entries whose newest job the cluster does not know at all: its JobManager restarted
    (or the stack was taken down) since. A job the cluster knows as FAILED is left for a person to look at."""
    return lost_entries(registry.active(), flink.rest(settings, "/jobs/overview", timeout=3)["jobs"])


def lost_entries(entries: list[dict], cluster_jobs: list[dict]) -> list[dict]:
    """The entries (active ones) whose newest job id the cluster's /jobs/overview does not list, and whose
    name does not run under another id either."""
    known = {job["jid"] for job in cluster_jobs}
    running = {job["name"] for job in cluster_jobs if job["state"] in LIVE_STATES}
    return [entry for entry in entries
            if entry["name"] not in running and (entry.get("job_ids") or [None])[-1] not in known]


def ended_entries(entries: list[dict], cluster_jobs: list[dict]) -> dict[str, str]:
    """{newest job id: registry state} for entries whose newest job was CANCELED or FINISHED on purpose."""
    states = {job["jid"]: job["state"] for job in cluster_jobs}
    ends = {"CANCELED": registry.CANCELLED, "FINISHED": registry.FINISHED}
    found = {}
    for entry in entries:
        newest = (entry.get("job_ids") or [None])[-1]
        if states.get(newest) in ends:
            found[newest] = ends[states[newest]]
    return found


def resume_registered(settings: Settings, report: Callable[[str], None] = say,
                      skip: set[str] = frozenset()) -> list[dict]:
    """Resubmits every lost job (lost_jobs) from its newest retained checkpoint, what the Flink Kubernetes
    Operator's last-state mode does; returns what was done, one dict per job."""
    done = []
    with _lock():
        for entry in lost_jobs(settings):
            name = entry["name"]
            if name in skip:
                continue
            restore = registry.restore_point(entry, flink.CHECKPOINT_DIR)
            report(f"jobs: resubmitting '{name}' ({entry['kind']} {entry['script']}) from "
                   f"{restore or 'the beginning (no retained checkpoint)'}")
            try:
                if entry["kind"] == "datastream":
                    job_id = submit_datastream(settings, savepoint=restore, args=entry.get("args"),
                                               resume=False)
                else:
                    job_id = submit_sql(settings, entry["script"], savepoint=restore,
                                        variables=entry.get("variables") or None, resume=False)
            except StackError as err:
                report(f"jobs: resubmitting '{name}' failed: {err}")
                done.append({"name": name, "job_id": None, "restored_from": restore, "error": str(err)})
                continue
            report(f"jobs: '{name}' resubmitted as {job_id}")
            done.append({"name": name, "job_id": job_id, "restored_from": restore})
    return done


def watch(settings: Settings, interval: float = 5.0) -> None:
    """docker-compose's `jobs` service after submit-all: keeps the registered jobs alive the way the local
    supervisor does (job ends into the registry; jobs a restarted JobManager lost, resubmitted)."""
    import time

    say(f"watching the jobs every {interval:g}s (registry {registry.registry_file()})")
    while True:
        pause = interval
        try:
            if flink.healthy(settings):
                record_job_ends(settings)
                if lost_jobs(settings):
                    with registry.submission_lock(blocking=False) as got:
                        if got and any(r.get("error") for r in resume_registered(settings)):
                            pause = 60.0  # a failing resubmission is not retried in a tight loop
        except (StackError, OSError, ValueError, KeyError) as err:  # the JobManager restarting: next round
            say(f"jobs: {err}")
        time.sleep(pause)


def record_job_ends(settings: Settings) -> list[str]:
    """Copies deliberate ends into the registry: a registered job CANCELED (make cancel, web UI, REST) or
    FINISHED (stopped with a savepoint, bounded) is not resurrected. A job that merely vanished with its
    JobManager stays active. Returns the names marked."""
    ended = ended_entries(registry.active(), flink.rest(settings, "/jobs/overview", timeout=3)["jobs"])
    return [name for job_id, state in ended.items() if (name := registry.mark(job_id, state))]


def cancel(settings: Settings, job_id: str) -> None:
    """A deliberate cancel: the registry forgets the job first, so no supervisor brings it back."""
    registry.mark(job_id, registry.CANCELLED)
    try:
        flink.rest(settings, f"/jobs/{job_id}?mode=cancel", method="PATCH")
    except urllib.error.HTTPError as err:
        raise StackError(f"Flink could not cancel job {job_id}: HTTP {err.code} (make check lists the jobs)"
                         ) from None
    except (urllib.error.URLError, OSError):
        raise StackError(f"Flink is not up at {settings.flink.rest_url}: run `make up` first") from None
