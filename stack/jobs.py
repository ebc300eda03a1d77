"""Submitting MarketPulse's Flink jobs to the session cluster, once: a job already RUNNING under the same
name is left alone, so `make demo` and docker-compose's `jobs` service can run again safely."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from marketpulse.config import Settings
from stack import flink, paths
from stack.errors import StackError
from stack.log import say
from stack.sql import run_sql_script

PIPELINE_NAME = re.compile(r"SET\s+'pipeline\.name'\s*=\s*'([^']+)'", re.IGNORECASE)


def running_jobs(settings: Settings) -> dict[str, str]:
    """{job name: job id} of the cluster's RUNNING (or starting) jobs."""
    jobs = flink.rest(settings, "/jobs/overview")["jobs"]
    return {job["name"]: job["jid"] for job in jobs
            if job["state"] in ("RUNNING", "CREATED", "INITIALIZING", "RESTARTING")}


def sql_job_name(script: Path) -> str:
    found = PIPELINE_NAME.search(script.read_text())
    if not found:
        raise StackError(f"{script} sets no 'pipeline.name': the job could not be recognised when running")
    return found.group(1)


def submit_datastream(settings: Settings) -> str | None:
    """Submits jobs/market_metrics.py detached; returns its job id (None if it was running already)."""
    name = settings.jobs.datastream_name
    if name in running_jobs(settings):
        say(f"Flink: '{name}' is already running")
        return None
    job_file = paths.REPO / settings.jobs.datastream
    if not job_file.exists():
        raise StackError(f"DataStream job not found: {job_file}")
    say(f"Flink: submitting '{name}' (flink run -d -py {settings.jobs.datastream})")
    result = subprocess.run([flink.bin_path("flink"), "run", "-d", "-py", str(job_file)],
                            env=flink.flink_env(), capture_output=True, text=True, cwd=paths.REPO)
    job_ids = re.findall(r"JobID ([0-9a-f]{32})", result.stdout)
    if result.returncode != 0 or not job_ids:
        log = flink.LOG_DIR / "submit-datastream.log"
        log.write_text(result.stdout + result.stderr)
        raise StackError(f"submitting {settings.jobs.datastream} failed; see {log}")
    return job_ids[-1]


def submit_sql(settings: Settings, script: str) -> str | None:
    path = paths.REPO / script
    if not path.exists():
        raise StackError(f"SQL script not found: {path}")
    name = sql_job_name(path)
    if name in running_jobs(settings):
        say(f"Flink: '{name}' is already running")
        return None
    result = run_sql_script(settings, str(path), capture=True)
    if result.returncode != 0 or "[ERROR]" in result.stdout:
        log = flink.LOG_DIR / f"submit-{path.stem}.log"
        log.write_text(result.stdout + result.stderr)
        raise StackError(f"sql-client.sh -f {script} failed; see {log}")
    return running_jobs(settings).get(name)


def submit_all(settings: Settings) -> list[str]:
    """The DataStream job and every SQL script of [jobs] in conf/pipeline.toml; returns new job ids."""
    from concurrent.futures import ThreadPoolExecutor

    # Each sql-client.sh is a JVM that spends most of its ~20 s starting and planning: run them side by side.
    with ThreadPoolExecutor(max_workers=len(settings.jobs.sql_scripts) + 1) as pool:
        futures = [pool.submit(submit_datastream, settings)]
        futures += [pool.submit(submit_sql, settings, script) for script in settings.jobs.sql_scripts]
        submitted = [future.result() for future in futures]
    return [job_id for job_id in submitted if job_id]
