"""Flink's SQL Gateway as a stack component, and a small client of its REST API.

The gateway is a long-running JVM next to the cluster (`sql-gateway.sh start-foreground`, the jar in
.deps/flink-opt) that takes SQL statements over REST and submits their jobs to the session cluster. A script
submitted through it pays for planning only, not for a `sql-client.sh` JVM start as well (here: 25.6 s for
window_metrics.sql with sql-client.sh, 12.4 s for the whole pipeline.sql through the gateway): the demo and
the tests submit this way; `make sql` keeps `sql-client.sh -f` for people.

REST API (v1 paths): POST /sessions -> sessionHandle; POST /sessions/{s}/statements -> operationHandle;
GET /sessions/{s}/operations/{o}/status; GET .../result/0 (an error's text, or the jobID of an INSERT or a
statement set); DELETE /sessions/{s}.

Compiled plans ([flink] sql_plan_cache): planning the pipeline's statement set is most of a submission
(measured on a cold gateway, nothing else running: 8.4 s of DDL and views, 10.3 s of planning, 25.5 s in
all; while the demo's DataStream job drained its history beside it, 50 to 68 s). So the first submission of a
script compiles its statement set into a JSON plan (COMPILE PLAN, Flink's compiled plans), and every
submission runs the plan (EXECUTE PLAN): the session's SETs and one statement, 7.5 s on a cold gateway.
A plan is keyed by the rendered statements, so a change to the SQL or to a setting it renders compiles a new
one. The plan pins the planner's output, not the job's state: a job run from a plan gets no operator uids
('table.exec.uid.generation' = 'DISABLED'; by default a plan's uids carry the planner's node counter of the
JVM that compiled it), so it and a job planned afresh (gateway without cache, sql-client.sh) have the same
operator ids and restore each other's checkpoints."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlparse

from marketpulse.config import Settings
from marketpulse.sqltemplate import split_statements
from stack import flink
from stack.errors import StackError
from stack.proc import Program

NAME = "sqlgateway"
PROGRAMS = ("sqlgateway",)
READY_TIMEOUT_S = 90.0
SERVICE = "sql-gateway"  # Flink's name for it in flink-console.sh (its pid file)
STATEMENT_TIMEOUT_S = 300.0
PLAN_DIR = flink.HOME / "plans"  # read and written by the gateway, on this machine
PLANS_KEPT = 24  # the newest; the tests render many scripts (scratch topics), each its own plan
# A job run from a plan gets no operator uids either, as one planned afresh by the gateway or sql-client.sh:
# its operator ids then come from the job's topology, the same either way (module docstring).
PLAN_SETTINGS = ["SET 'table.exec.uid.generation' = 'DISABLED'"]


def host_port(settings: Settings) -> tuple[str, int]:
    url = urlparse(settings.flink.sql_gateway_url)
    return url.hostname or "127.0.0.1", url.port or 8083


def ports(settings: Settings) -> list[tuple[int, str]]:
    return [(host_port(settings)[1], "Flink SQL Gateway REST")]


def pids() -> list[int]:
    return flink.service_pids((SERVICE,))


def program_pids() -> dict[str, list[int]]:
    return {NAME: pids()}


def running() -> bool:
    return bool(pids())


def log_hint() -> Path:
    return flink.LOG_DIR


def gateway_options(settings: Settings) -> list[str]:
    """The gateway's own settings as dynamic properties; everything else comes from the cluster's
    rendered config.yaml (rest.address/port: where it submits jobs)."""
    host, port = host_port(settings)
    return [f"-Dsql-gateway.endpoint.rest.address={host}",
            f"-Dsql-gateway.endpoint.rest.bind-address={settings.flink.bind_host}",
            f"-Dsql-gateway.endpoint.rest.port={port}",
            "-Dexecution.target=remote"]


def programs(settings: Settings) -> list[Program]:
    env = flink.flink_env()
    env["STD_REDIRECT_TO_FILE"] = "true"
    return [Program(name=NAME, title="Flink SQL Gateway",
                    argv=[flink.bin_path("sql-gateway.sh"), "start-foreground", *gateway_options(settings)],
                    env=env, log_file=flink.LOG_DIR / "sqlgateway.console", log_hint=flink.LOG_DIR,
                    stop_timeout=20.0, cwd=flink.paths.REPO)]


def prepare(settings: Settings) -> None:
    flink.prepare(settings)


def _request(settings: Settings, path: str, method: str = "GET", body: dict | None = None,
             timeout: float = 10) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(settings.flink.sql_gateway_url.rstrip("/") + "/v1" + path, data=data,
                                     method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


def ready(settings: Settings) -> bool:
    try:
        return "version" in _request(settings, "/info", timeout=2)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def healthy(settings: Settings) -> bool:
    return running() and ready(settings)



def stop(settings: Settings) -> bool:
    return flink.stop_services((SERVICE,))


def run_foreground(settings: Settings) -> None:
    """Container entry point (docker-compose.yml's sql-gateway service)."""
    flink.exec_foreground(settings, "sql-gateway.sh", ["start-foreground", *gateway_options(settings)])


# --- client -------------------------------------------------------------------------------------------

def statements(text: str) -> list[str]:
    """The script's statements as the gateway takes them: one per call, a statement set whole
    (EXECUTE STATEMENT SET BEGIN ...; ...; END), which split_statements cuts at its semicolons."""
    result: list[str] = []
    statement_set: list[str] | None = None
    for statement in split_statements(text):
        if statement_set is None and statement.upper().startswith("EXECUTE STATEMENT SET"):
            statement_set = [statement]
        elif statement_set is not None:
            if statement.upper() == "END":
                result.append(";\n".join(statement_set) + ";\nEND")
                statement_set = None
            else:
                statement_set.append(statement)
        else:
            result.append(statement)
    if statement_set is not None:
        raise StackError("a statement set without END")
    return result


def _error_text(err: urllib.error.HTTPError) -> str:
    """The cause of a failed statement: the last 'Caused by' line of the gateway's exception, not its
    stack trace."""
    try:
        body = json.loads(err.read() or b"{}")
        text = "\n".join(body.get("errors", [])) or str(err)
    except ValueError:
        text = str(err)
    causes = [line.strip() for line in text.splitlines() if line.strip().startswith("Caused by:")]
    return causes[-1].removeprefix("Caused by:").strip() if causes else text.strip().splitlines()[0]


def _run(settings: Settings, session: str, statement: str) -> dict:
    """Executes one statement and waits for it; returns the first page of its result."""
    operation = _request(settings, f"/sessions/{session}/statements", "POST",
                         {"statement": statement})["operationHandle"]
    base = f"/sessions/{session}/operations/{operation}"
    deadline = time.monotonic() + STATEMENT_TIMEOUT_S
    while True:
        status = _request(settings, f"{base}/status")["status"]
        if status not in ("INITIALIZED", "PENDING", "RUNNING"):
            break
        if time.monotonic() > deadline:
            raise StackError(f"the SQL Gateway did not finish a statement in {STATEMENT_TIMEOUT_S:.0f} s: "
                             f"{statement[:80]}")
        time.sleep(0.1)
    try:
        return _request(settings, f"{base}/result/0?rowFormat=JSON", timeout=60)
    except urllib.error.HTTPError as err:
        first_line = " ".join(statement.split())[:100]
        raise StackError(f"[ERROR] {_error_text(err)}\n  in: {first_line}") from None


def submit(settings: Settings, text: str, say=print) -> list[str]:
    """Runs every statement of a rendered script in one gateway session; returns the ids of the jobs
    it submitted (an INSERT or statement set each). With the plan cache on, a script ending in its one
    INSERT or statement set runs from its compiled plan (module docstring)."""
    if not healthy(settings):
        raise StackError(f"the Flink SQL Gateway is not up at {settings.flink.sql_gateway_url}: "
                         "run `make up` first")
    session = _request(settings, "/sessions", "POST", {"sessionName": "marketpulse"})["sessionHandle"]
    job_ids: list[str] = []
    script = statements(text)
    plan = plan_file(settings, script)
    cached = plan is not None and plan.exists()
    try:
        try:
            _run_all(settings, session, _planned(settings, session, script, say), job_ids, say)
        except StackError as err:
            if not cached or job_ids:
                raise
            # A plan written by something else (a killed compile, another Flink build): compile anew (only
            # the SETs ran in this session so far).
            say(f"the compiled plan {plan.name} failed ({err}); compiling it again")
            plan.unlink(missing_ok=True)
            _run_all(settings, session, _planned(settings, session, script, say), job_ids, say)
    finally:
        try:
            _request(settings, f"/sessions/{session}", "DELETE")
        except (urllib.error.URLError, OSError):
            pass
    return job_ids


def _run_all(settings: Settings, session: str, statements_: list[str], job_ids: list[str], say) -> None:
    for statement in statements_:
        result = _run(settings, session, statement)
        if result.get("jobID"):
            job_ids.append(result["jobID"])
            say(f"Job ID: {result['jobID']}")


def is_job_statement(statement: str) -> bool:
    head = statement.lstrip().upper()
    return head.startswith(("EXECUTE STATEMENT SET", "INSERT ", "INSERT\n"))


def is_set(statement: str) -> bool:
    return statement.lstrip().upper().startswith("SET ")


def plan_key(statements_: list[str]) -> str:
    """What a compiled plan depends on: every statement but the savepoint to start from (a SET that does
    not change the plan), and the Flink version that compiled it."""
    relevant = [s for s in statements_ if not (is_set(s) and "'execution.savepoint.path'" in s)]
    return hashlib.sha256("\n;\n".join([version("apache-flink")] + relevant).encode()).hexdigest()[:20]


def plan_file(settings: Settings, statements_: list[str]) -> Path | None:
    """Where the compiled plan of these statements is (or goes); None when they run as written: the cache
    is off, or the script does not end in its only INSERT or statement set."""
    jobs = [s for s in statements_ if is_job_statement(s)]
    if not settings.flink.sql_plan_cache or len(jobs) != 1 or jobs[0] is not statements_[-1]:
        return None
    return PLAN_DIR / f"{plan_key(statements_)}.json"


def compile_statements(statements_: list[str], target: Path) -> list[str]:
    """The script with its job statement replaced by COMPILE PLAN '<target>' FOR that statement."""
    job = statements_[-1].lstrip()
    compiled_from = job[len("EXECUTE "):] if job.upper().startswith("EXECUTE ") else job
    return statements_[:-1] + [f"COMPILE PLAN '{target}' FOR {compiled_from}"]


def _planned(settings: Settings, session: str, statements_: list[str], say) -> list[str]:
    """The statements to run for a script: as written, or (plan cache) its SETs and EXECUTE PLAN, after
    compiling the plan in this session if there is none yet."""
    plan = plan_file(settings, statements_)
    if plan is None:
        return statements_
    if plan.exists():
        plan.touch()  # the newest are kept
        return [s for s in statements_ if is_set(s)] + PLAN_SETTINGS + [f"EXECUTE PLAN '{plan}'"]
    private_dir(PLAN_DIR)
    partial = plan.with_suffix(".compiling")
    partial.unlink(missing_ok=True)
    for statement in compile_statements(statements_, partial):
        _run(settings, session, statement)
    partial.rename(plan)
    say(f"compiled plan {plan}")
    prune(PLAN_DIR, PLANS_KEPT)
    return PLAN_SETTINGS + [f"EXECUTE PLAN '{plan}'"]


def private_dir(directory: Path) -> None:
    """The plan folder, readable by this user only: a compiled plan holds its sinks' options, the writer
    role's password among them."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)


PINNED = "pinned.txt"  # in the plan folder: the plans of [jobs] sql_scripts, one file name per line


def pin(directory: Path, plans: list[Path]) -> None:
    """These plans (the configured jobs', compiled by make setup) are never pruned: the tests compile many
    scratch plans, which would otherwise push the demo's out and cost its first submission a compile."""
    private_dir(directory)
    (directory / PINNED).write_text("".join(f"{plan.name}\n" for plan in plans))


def prune(directory: Path, keep: int) -> None:
    """Deletes all but the newest `keep` plans, and the pinned ones."""
    try:
        pinned = set((directory / PINNED).read_text().split())
    except OSError:
        pinned = set()
    plans = sorted((path for path in directory.glob("*.json") if path.name not in pinned),
                   key=lambda path: path.stat().st_mtime, reverse=True)
    for old in plans[keep:]:
        old.unlink(missing_ok=True)
