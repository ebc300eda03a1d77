"""Redeploying the DataStream job from a savepoint: at another parallelism (rescale) or with the code as it
is now (upgrade). What `flink stop` + `flink run -s` do by hand, as one step that also keeps the job
registry right (stack/registry.py), so a later JobManager restart resumes the new job, not the old one.

State moves because every operator has a fixed uid and the job fixes max parallelism at 128
(jobs/market_metrics.py): keyed state is redistributed by key group at any parallelism up to that. A new
version of the job must keep the uids and the state it reads (names and types in marketpulse/flink/
functions.py); new operators start empty, and a removed stateful one needs --allowNonRestoredState."""

from __future__ import annotations

import time

from marketpulse.config import Settings
from stack import flink, registry
from stack.errors import StackError
from stack.jobs import submit_datastream
from stack.log import say

SAVEPOINT_TIMEOUT = 300


def stop_with_savepoint(settings: Settings, job_id: str) -> str:
    """Stops the job with a savepoint (no drain: open windows stay open in it); returns its path."""
    try:
        trigger = flink.rest(settings, f"/jobs/{job_id}/stop", "POST", {"drain": False})["request-id"]
    except OSError as err:
        raise StackError(f"cannot stop job {job_id} with a savepoint: {err}") from None
    deadline = time.monotonic() + SAVEPOINT_TIMEOUT
    while time.monotonic() < deadline:
        status = flink.rest(settings, f"/jobs/{job_id}/savepoints/{trigger}")
        if status["status"]["id"] == "COMPLETED":
            operation = status.get("operation") or {}
            if "location" not in operation:
                cause = str(operation.get("failure-cause", {}).get("stack-trace", "")).splitlines()[:1]
                raise StackError(f"savepoint of job {job_id} failed: {' '.join(cause) or 'see the web UI'}")
            return operation["location"]
        time.sleep(1)
    raise StackError(f"savepoint of job {job_id} not done within {SAVEPOINT_TIMEOUT}s")


def _options(args: list[str]) -> list[tuple[str, str | None]]:
    """['--a', '1', '--b=2', '--flag'] -> [('--a', '1'), ('--b', '2'), ('--flag', None)]."""
    options: list[tuple[str, str | None]] = []
    index = 0
    while index < len(args):
        name = args[index]
        if "=" in name:
            name, value = name.split("=", 1)
            options.append((name, value))
            index += 1
        elif index + 1 < len(args) and not args[index + 1].startswith("--"):
            options.append((name, args[index + 1]))
            index += 2
        else:
            options.append((name, None))
            index += 1
    return options


def merge_job_args(previous: list[str], given: list[str]) -> list[str]:
    """The options the job last ran with, each replaced by the one given of the same name, then the new
    ones: `make upgrade` without options keeps --group-id, --parallelism, ... of the running job."""
    given_options = _options(given)
    given_names = {name for name, _ in given_options}
    merged = [option for option in _options(previous) if option[0] not in given_names] + given_options
    return [part for name, value in merged for part in ((name,) if value is None else (name, value))]


def registered_args(job_id: str) -> list[str]:
    """The options the job was submitted with, from the registry ([] if it is not there)."""
    for entry in registry.load().values():
        if (entry.get("job_ids") or [None])[-1] == job_id:
            return list(entry.get("args") or [])
    return []


def redeploy(settings: Settings, job_id: str, job_args: list[str]) -> str:
    """Savepoint, stop, resubmit with the job's registered options overridden by job_args (e.g.
    --parallelism 2); returns the new job id."""
    job_args = merge_job_args(registered_args(job_id), job_args)
    registry.mark(job_id, registry.FINISHED)
    say(f"Flink: stopping {job_id} with a savepoint")
    savepoint = stop_with_savepoint(settings, job_id)
    say(f"Flink: savepoint {savepoint}")
    new_id = submit_datastream(settings, savepoint=savepoint, args=job_args)
    if not new_id:
        raise StackError("the DataStream job is still running under its name: was the right job id given?")
    say(f"Flink: {job_id} -> {new_id} (options: {' '.join(job_args) or 'none'}), resumed from {savepoint}")
    return new_id
