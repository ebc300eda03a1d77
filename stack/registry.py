"""The registry of the pipeline's Flink jobs: what was submitted through the stack and how to submit it
again, so a JobManager restart loses no job (a session cluster without HA forgets its jobs).

<stack dir>/jobs/registry.json holds one entry per job name:

    {"kind": "datastream" | "sql", "script": "jobs/market_metrics.py", "args": [...], "variables": {...},
     "name": "MarketPulse DataStream", "job_ids": [oldest, ..., newest], "restore_path": None | "<chk dir>",
     "state": "active" | "cancelled" | "finished", "updated_at": <unix time>}

Only "active" entries are resubmitted. A job cancelled (`make cancel`, the web UI, REST) or stopped with a
savepoint becomes "cancelled"/"finished" and stays down. Resubmission starts from the newest retained
checkpoint of the newest job id (else from what that job itself started from): the Flink Kubernetes
Operator's last-state upgrade mode.

Two locks: submit.lock is held for a whole submission (seconds: a `flink run` or sql-client JVM), so the
supervisor never resubmits while a person's submission is under way; registry.lock only around a
read-modify-write of the file."""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stack import paths

ACTIVE, CANCELLED, FINISHED = "active", "cancelled", "finished"
CHECKPOINT = re.compile(r"^chk-(\d+)$")


def registry_dir() -> Path:
    return paths.STACK_DIR / "jobs"


def registry_file() -> Path:
    return registry_dir() / "registry.json"


@contextmanager
def _registry_lock() -> Iterator[None]:
    registry_dir().mkdir(parents=True, exist_ok=True)
    with open(registry_dir() / "registry.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_held = 0  # submit.lock is re-entrant within one process (submit_all's threads run under its lock)
_held_guard = threading.Lock()


@contextmanager
def submission_lock(blocking: bool = True, on_wait=None) -> Iterator[bool]:
    """Held while a job is being submitted. Non-blocking: yields False when someone else holds it."""
    global _held
    with _held_guard:
        reentered = _held > 0
        _held += reentered
    if reentered:
        try:
            yield True
        finally:
            with _held_guard:
                _held -= 1
        return
    registry_dir().mkdir(parents=True, exist_ok=True)
    with open(registry_dir() / "submit.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not blocking:
                yield False
                return
            if on_wait:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        with _held_guard:
            _held += 1
        try:
            yield True
        finally:
            with _held_guard:
                _held -= 1
            fcntl.flock(handle, fcntl.LOCK_UN)


def load() -> dict[str, dict]:
    try:
        return json.loads(registry_file().read_text()).get("jobs", {})
    except (OSError, ValueError):
        return {}


def _save(jobs: dict[str, dict]) -> None:
    tmp = registry_file().with_suffix(".tmp")
    tmp.write_text(json.dumps({"jobs": jobs}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, registry_file())


@contextmanager
def _editing() -> Iterator[dict[str, dict]]:
    with _registry_lock():
        jobs = load()
        yield jobs
        _save(jobs)


def record(name: str, kind: str, script: str, job_id: str | None, args: list[str] | None = None,
           variables: dict[str, str] | None = None, restore_path: str | None = None) -> dict:
    """A submission of `name` (its newest job id, and the checkpoint/savepoint it started from)."""
    with _editing() as jobs:
        entry = jobs.get(name) or {"job_ids": []}
        entry.update(kind=kind, script=script, args=list(args or []), variables=dict(variables or {}),
                     name=name, restore_path=restore_path, state=ACTIVE, updated_at=time.time())
        if job_id and job_id not in entry["job_ids"]:
            entry["job_ids"].append(job_id)
        jobs[name] = entry
        return dict(entry)


def mark(job_id: str, state: str) -> str | None:
    """Marks the entry whose newest job id is job_id (an older id's end says nothing); returns its name."""
    with _editing() as jobs:
        for name, entry in jobs.items():
            if entry.get("job_ids") and entry["job_ids"][-1] == job_id and entry.get("state") == ACTIVE:
                entry.update(state=state, updated_at=time.time())
                return name
    return None


def active() -> list[dict]:
    return [entry for entry in load().values() if entry.get("state") == ACTIVE]


def newest_checkpoint(job_dir: Path) -> Path | None:
    """The complete checkpoint (chk-N with a _metadata file) with the highest N under one job's folder."""
    best: tuple[int, Path] | None = None
    if not job_dir.is_dir():
        return None
    for child in job_dir.iterdir():
        found = CHECKPOINT.match(child.name)
        if found and (child / "_metadata").is_file():
            if best is None or int(found.group(1)) > best[0]:
                best = (int(found.group(1)), child)
    return best[1] if best else None


def restore_point(entry: dict, checkpoint_root: Path) -> str | None:
    """Where a resubmission of `entry` starts: the newest job id's newest checkpoint, else the checkpoint or
    savepoint that job itself started from (it died before its first checkpoint), else nothing (fresh).
    Older job ids are not consulted: their checkpoints predate the newest job's starting point."""
    job_ids = entry.get("job_ids") or []
    if job_ids:
        newest = newest_checkpoint(checkpoint_root / job_ids[-1])
        if newest is not None:
            return str(newest)
    return entry.get("restore_path")
