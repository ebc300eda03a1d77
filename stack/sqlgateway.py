"""Flink's SQL Gateway as a stack component, and a small client of its REST API.

The gateway is a long-running JVM next to the cluster (`sql-gateway.sh start-foreground`, the jar in
.deps/flink-opt) that takes SQL statements over REST and submits their jobs to the session cluster. A script
submitted through it pays for planning only, not for a `sql-client.sh` JVM start as well (here: 25.6 s for
window_metrics.sql with sql-client.sh, 12.4 s for the whole pipeline.sql through the gateway): the demo and
the tests submit this way; `make sql` keeps `sql-client.sh -f` for people.

REST API (v1 paths): POST /sessions -> sessionHandle; POST /sessions/{s}/statements -> operationHandle;
GET /sessions/{s}/operations/{o}/status; GET .../result/0 (an error's text, or the jobID of an INSERT or a
statement set); DELETE /sessions/{s}."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
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


def after_start(settings: Settings) -> None:
    pass


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
    it submitted (an INSERT or statement set each)."""
    if not healthy(settings):
        raise StackError(f"the Flink SQL Gateway is not up at {settings.flink.sql_gateway_url}: "
                         "run `make up` first")
    session = _request(settings, "/sessions", "POST", {"sessionName": "marketpulse"})["sessionHandle"]
    job_ids = []
    try:
        for statement in statements(text):
            result = _run(settings, session, statement)
            if result.get("jobID"):
                job_ids.append(result["jobID"])
                say(f"Job ID: {result['jobID']}")
    finally:
        try:
            _request(settings, f"/sessions/{session}", "DELETE")
        except (urllib.error.URLError, OSError):
            pass
    return job_ids
