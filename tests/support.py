"""Helpers for the integration and end-to-end tests: unique Kafka topics, Postgres access, submitting
PyFlink jobs and SQL scripts to the running cluster and waiting on Flink's REST API."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import psycopg2
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from marketpulse.config import Settings, load_settings, postgres_dsn
from stack import flink as stack_flink

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def http_stub(answer: Callable[[str], bytes]):
    """A local HTTP server on a free port that answers every GET with 200 and answer(path) as JSON (answer
    may sleep: each request has its thread); yields its base URL, http://127.0.0.1:PORT."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            body = answer(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def local_flink_jars() -> list[str]:
    """URIs of the jars a local PyFlink environment needs for the jobs' Java parts: the connectors (Kafka,
    JDBC) and flink-ext (RecordBatcher, and the marketpulse-jdbc sink, whose factory cannot load without the
    JDBC connector: once flink-ext is on a JVM's class loader, every table environment's factory discovery
    needs both)."""
    from stack import paths
    from stack.setup import EXT_JAR

    jars = sorted(paths.FLINK_CONNECTOR_JARS.glob("*.jar")) + [EXT_JAR]
    return [jar.resolve().as_uri() for jar in jars]


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.5):
    """Polls until check() returns something truthy, which is returned; fails naming `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last value: {last!r})")


# --- Kafka -------------------------------------------------------------------------------------------

def create_topic(settings: Settings, name: str, partitions: int = 1) -> str:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers, client_id="tests")
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
        wait_for(lambda: name in admin.list_topics(), 30, f"topic {name}")
    finally:
        admin.close()
    return name


def delete_topic(settings: Settings, name: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers, client_id="tests")
    try:
        admin.delete_topics([name])
    except Exception:  # already gone: nothing to clean
        pass
    finally:
        admin.close()


def produce(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    try:
        for key, value in records:
            producer.send(topic, value=value, key=key)
        producer.flush(30)
    finally:
        producer.close()


# --- Postgres ----------------------------------------------------------------------------------------

def pg_connect(settings: Settings):
    """An autocommit connection (use contextlib.closing: psycopg2's `with conn` opens a transaction)."""
    conn = psycopg2.connect(postgres_dsn(settings, "owner"))
    conn.autocommit = True
    return conn


def query(settings: Settings, sql: str, params=None) -> list[tuple]:
    with closing(pg_connect(settings)) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


# --- Flink -------------------------------------------------------------------------------------------

def flink_rest(settings: Settings, path: str, method: str = "GET", body: dict | None = None):
    """Flink's REST API through the stack's own client (JSON, or None for an empty body)."""
    return stack_flink.rest(settings, path, method=method, body=body, timeout=10)


def flink_jobs(settings: Settings) -> list[dict]:
    return flink_rest(settings, "/jobs/overview")["jobs"]


def flink_run(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`flink run ARGS` against the session cluster, through the stack's environment and jars."""
    return subprocess.run([sys.executable, "-m", "stack", "flink", "run", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


def job_id_from_output(output: str) -> str:
    for line in output.splitlines():
        if "JobID" in line:
            return line.split()[-1]
    raise AssertionError(f"no JobID in flink run output:\n{output[-2000:]}")


def cancel_job(settings: Settings, job_id: str) -> None:
    try:
        flink_rest(settings, f"/jobs/{job_id}?mode=cancel", method="PATCH")
    except Exception:  # already finished
        pass


def vertex_metric_sum(settings: Settings, job_id: str, suffix: str, prefix: str = "") -> int:
    """Sum over all vertices and subtasks of the metrics named `prefix...suffix`."""
    total = 0
    for vertex in flink_rest(settings, f"/jobs/{job_id}")["vertices"]:
        base = f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
        names = [metric["id"] for metric in flink_rest(settings, base)
                 if metric["id"].endswith(suffix) and metric["id"].startswith(prefix)]
        if names:
            values = flink_rest(settings, f"{base}?get={quote(','.join(names))}&agg=sum")
            total += sum(int(float(metric["sum"])) for metric in values)
    return total


def job_placement(settings: Settings, job_id: str) -> dict[str, dict[str, int]]:
    """{vertex name: {TaskManager id: subtasks there}} of a running job."""
    found = {}
    for vertex in flink_rest(settings, f"/jobs/{job_id}")["vertices"]:
        counts: dict[str, int] = {}
        for subtask in flink_rest(settings, f"/jobs/{job_id}/vertices/{vertex['id']}")["subtasks"]:
            counts[subtask["taskmanager-id"]] = counts.get(subtask["taskmanager-id"], 0) + 1
        found[vertex["name"]] = counts
    return found


def job_restarts(settings: Settings, job_id: str) -> int:
    """How often Flink restarted the job (its numRestarts metric)."""
    values = flink_rest(settings, f"/jobs/{job_id}/metrics?get=numRestarts") or []
    return int(float(values[0]["value"])) if values else 0


def job_exceptions(settings: Settings, job_id: str) -> str:
    """The root exception of a job, for assertion messages."""
    try:
        history = flink_rest(settings, f"/jobs/{job_id}/exceptions").get("exceptionHistory", {})
        entries = history.get("entries")
    except Exception as err:
        return f"(no exceptions available: {err})"
    return entries[0]["stacktrace"][-3000:] if entries else "(none)"


def create_scratch_database(settings: Settings, prefix: str = "mp_test") -> Settings:
    """A new, empty database with the project's schema applied (db/schema/*.sql), for tests that need
    exact table contents; returns settings pointing at it. Drop it with drop_scratch_database."""
    import copy

    from stack.postgres import apply_schema

    name = unique_name(prefix)
    with closing(pg_connect(settings)) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    scratch = copy.deepcopy(settings)
    scratch.postgres.database = name
    apply_schema(scratch)
    return scratch


def drop_scratch_database(settings: Settings, scratch: Settings, attempts: int = 10) -> None:
    """DROP DATABASE ... WITH (FORCE), which ends the sessions still open on it (a dashboard, a job's
    sink). FORCE refuses while an autovacuum worker is in the database (a process of no role: "must be a
    member of the role whose process is being terminated"); a plain DROP ends autovacuum itself and waits
    for it, so that refusal falls back to one, and the pair is tried again while sessions are in the way."""
    import time

    from psycopg2.errors import InsufficientPrivilege, ObjectInUse

    name = scratch.postgres.database
    with closing(pg_connect(settings)) as conn, conn.cursor() as cur:
        for attempt in range(attempts):
            try:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except InsufficientPrivilege:
                try:
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
                    return
                except ObjectInUse:
                    if attempt == attempts - 1:
                        raise
                    time.sleep(0.5)


def env_for(scratch: Settings, **overrides: str) -> dict[str, str]:
    """The process environment that points a component (job, dashboard, generator) at `scratch`'s
    database, plus MARKETPULSE_* overrides given as section_key=value, e.g. kafka_trades_topic="t"."""
    import os

    env = dict(os.environ)
    env["MARKETPULSE_POSTGRES_DATABASE"] = scratch.postgres.database
    for key, value in overrides.items():
        env[f"MARKETPULSE_{key.upper()}"] = str(value)
    return env


# --- private stacks ------------------------------------------------------------------------------------

# A private stack listens on base + these. Keep every port below Linux's ephemeral range (32768-60999): a
# listening port in that range can be taken by any outgoing connection's local port, and a Kafka broker then
# fails to bind it. Flink's reporter takes one port per Flink process from base + 9249 on.
PRIVATE_PORT_OFFSETS = {"postgres": 5432, "kafka": 9092, "controller": 9093, "rest": 8081, "rpc": 6123,
                        "gateway": 8083, "prometheus": 9090, "reporter": 9249}


def private_stack_environment(base: int, stack_dir: Path, slots: int, taskmanagers: int = 1,
                              **settings: str) -> dict[str, str]:
    """MARKETPULSE_* for a whole stack of its own in stack_dir, on base + PRIVATE_PORT_OFFSETS, with
    `slots` task slots over `taskmanagers` TaskManager processes, and more settings as section_key=value."""
    ports = {name: base + offset for name, offset in PRIVATE_PORT_OFFSETS.items()}
    reporters = [ports["reporter"] + n for n in range(taskmanagers + 1)]
    assert max(ports.values()) + taskmanagers < 32768, f"port base {base} reaches the ephemeral range"
    env = {
        "MARKETPULSE_STACK_DIR": str(stack_dir),
        "MARKETPULSE_POSTGRES_PORT": str(ports["postgres"]),
        "MARKETPULSE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports['kafka']}",
        "MARKETPULSE_KAFKA_CONTROLLER_PORT": str(ports["controller"]),
        "MARKETPULSE_FLINK_REST_URL": f"http://127.0.0.1:{ports['rest']}",
        "MARKETPULSE_FLINK_RPC_PORT": str(ports["rpc"]),
        "MARKETPULSE_FLINK_SQL_GATEWAY_URL": f"http://127.0.0.1:{ports['gateway']}",
        "MARKETPULSE_FLINK_TASKMANAGER_SLOTS": str(slots),
        "MARKETPULSE_FLINK_TASKMANAGERS": str(taskmanagers),
        "MARKETPULSE_METRICS_PROMETHEUS_PORT": str(ports["prometheus"]),
        "MARKETPULSE_METRICS_FLINK_REPORTER_PORTS": f"{reporters[0]}-{reporters[-1]}",
        "MARKETPULSE_METRICS_FLINK_TARGETS": ",".join(f"127.0.0.1:{port}" for port in reporters),
    }
    env.update({f"MARKETPULSE_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def stack_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m stack ARGS` on the stack in os.environ."""
    return subprocess.run([sys.executable, "-m", "stack", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@contextmanager
def private_stack(name: str, base: int, slots: int, taskmanagers: int = 1,
                  **settings: str) -> Iterator[Settings]:
    """A whole stack of its own (PostgreSQL, Kafka, Flink, SQL Gateway, Prometheus under its supervisor) in a
    fresh folder .stack/<name> (left in place after `down`, for its logs), so the shared stack is never
    touched. While it runs, os.environ points at it (MARKETPULSE_STACK_DIR and the ports), so the shared
    helpers that start processes (tests.pipeline.generate/submit_sql/submit_datastream, flink_run) act on it;
    yields its Settings and restores the environment afterwards."""
    import pytest

    stack_dir = REPO / ".stack" / name
    env = private_stack_environment(base, stack_dir, slots, taskmanagers, **settings)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        stack_cli("down")  # a stack a crashed run left behind in this folder
        shutil.rmtree(stack_dir, ignore_errors=True)
        started = time.monotonic()
        result = stack_cli("up")
        if result.returncode != 0:
            pytest.fail(f"`python -m stack up` of the private stack {name} failed:\n{result.stderr[-3000:]}",
                        pytrace=False)
        print(f"\nprivate stack {name} on port base {base} ({taskmanagers} TaskManager"
              f"{'s' if taskmanagers > 1 else ''}) up in {time.monotonic() - started:.0f}s")
        yield load_settings()
    finally:
        stack_cli("down")
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
