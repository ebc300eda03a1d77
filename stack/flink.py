"""A Flink session cluster (one JobManager, [flink] taskmanagers TaskManagers) from the apache-flink pip
package.

Nothing is written into site-packages: bin/config.sh is pointed at project folders through FLINK_CONF_DIR
(.stack/flink/conf, rendered from conf/flink), FLINK_LIB_DIR / FLINK_OPT_DIR (.deps, pyflink's jars plus
the connectors) and FLINK_LOG_DIR / FLINK_PID_DIR (.stack/flink). The same environment serves `flink run`
and `sql-client.sh`, so the client, the SQL client and the cluster all see the connector jars.

Several TaskManagers are separate processes, as on separate machines: records between subtasks on different
TaskManagers go over the network (Netty on 127.0.0.1). The first is the program `taskmanager`, the n-th
`taskmanager-<n>`, which runs under its own FLINK_IDENT_STRING (its own pid and log files); each has
taskmanager_slots / taskmanagers slots (rounded up) and its own RPC, data and metrics ports."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from marketpulse.config import Settings
from stack import paths
from stack.errors import StackError
from stack.proc import Program, pid_alive, require_java, stop_pid

NAME = "flink"
# The kinds of program; [flink] taskmanagers > 1 adds taskmanager-2, ... (taskmanager_names).
PROGRAMS = ("jobmanager", "taskmanager")
READY_TIMEOUT_S = 120.0
HOME = paths.STACK_DIR / "flink"
CONF_DIR = HOME / "conf"
LOG_DIR = HOME / "log"
PID_DIR = HOME / "pids"
CHECKPOINT_DIR = HOME / "checkpoints"
SAVEPOINT_DIR = HOME / "savepoints"
DAEMONS = ("standalonesession", "taskexecutor")


def rest_host_port(settings: Settings) -> tuple[str, int]:
    url = urlparse(settings.flink.rest_url)
    return url.hostname or "127.0.0.1", url.port or 8081


def taskmanager_count(settings: Settings) -> int:
    count = int(settings.flink.taskmanagers)
    if count < 1:
        raise StackError(f"flink.taskmanagers = {count}: the cluster needs at least one TaskManager")
    return count


def taskmanager_names(settings: Settings) -> list[str]:
    """The supervisor's TaskManager programs: taskmanager, taskmanager-2, ..."""
    return ["taskmanager"] + [f"taskmanager-{n}" for n in range(2, taskmanager_count(settings) + 1)]


def slots_per_taskmanager(settings: Settings) -> int:
    """[flink] taskmanager_slots is the local cluster's total, split evenly (rounded up)."""
    return -(-int(settings.flink.taskmanager_slots) // taskmanager_count(settings))


def reporter_port_count(ports: str) -> int:
    """Ports in a reporter port setting: '9249-9250' -> 2, '9249' -> 1."""
    first, _, last = str(ports).partition("-")
    return int(last or first) - int(first) + 1


def check_reporter_ports(settings: Settings) -> None:
    """Each Flink process takes the first free port of metrics.flink_reporter_ports: one per process, or a
    TaskManager runs without metrics."""
    needed = 1 + taskmanager_count(settings)
    ports = settings.metrics.flink_reporter_ports
    if reporter_port_count(ports) < needed:
        raise StackError(f"metrics.flink_reporter_ports = {ports} has fewer ports than the {needed} Flink "
                         f"processes (1 JobManager + {needed - 1} TaskManagers): widen the range, and add "
                         "the new ports to metrics.flink_targets")


def render_conf(settings: Settings) -> Path:
    """conf/flink/* plus the machine-specific keys (see the header of conf/flink/config.yaml)."""
    host, rest_port = rest_host_port(settings)
    CONF_DIR.mkdir(parents=True, exist_ok=True)
    for source in (paths.CONF_DIR / "flink").iterdir():
        shutil.copy(source, CONF_DIR / source.name)
    bind = settings.flink.bind_host
    machine = {
        "jobmanager.bind-host": bind,
        "jobmanager.rpc.address": host,
        "jobmanager.rpc.port": settings.flink.rpc_port,
        "taskmanager.bind-host": bind,
        "taskmanager.host": settings.flink.taskmanager_host or host,
        "rest.address": host,
        "rest.bind-address": bind,
        "rest.port": rest_port,
        "taskmanager.numberOfTaskSlots": slots_per_taskmanager(settings),
        "parallelism.default": settings.flink.parallelism,
        "state.checkpoints.dir": f"file://{CHECKPOINT_DIR}",
        "state.savepoints.dir": f"file://{SAVEPOINT_DIR}",
        # JobManager and TaskManagers on one machine: each takes the first free port of the range.
        "metrics.reporter.prom.port": settings.metrics.flink_reporter_ports,
        "python.executable": str(paths.PYTHON),
        "python.client.executable": str(paths.PYTHON),
        "env.pid.dir": str(PID_DIR),
        "env.log.dir": str(LOG_DIR),
    }
    with open(CONF_DIR / "config.yaml", "a") as config:
        config.write("\n# --- appended by python -m stack for this machine ---\n")
        for key, value in machine.items():
            config.write(f"{key}: {value}\n")
    (CONF_DIR / "masters").write_text(f"{host}:{rest_port}\n")
    (CONF_DIR / "workers").write_text(f"{host}\n")
    return CONF_DIR


def flink_env() -> dict[str, str]:
    """The environment for Flink's bin/ scripts (cluster daemons, `flink`, `sql-client.sh`)."""
    env = dict(os.environ)
    env.update({
        "FLINK_HOME": str(paths.pyflink_home()),
        "FLINK_CONF_DIR": str(CONF_DIR),
        "FLINK_LIB_DIR": str(paths.FLINK_LIB_DIR),
        "FLINK_OPT_DIR": str(paths.FLINK_OPT_DIR),
        "FLINK_PLUGINS_DIR": str(paths.FLINK_PLUGINS_DIR),
        "FLINK_LOG_DIR": str(LOG_DIR),
        "FLINK_PID_DIR": str(PID_DIR),
        # `flink run -py` starts the client-side Python from PATH unless told otherwise.
        "PATH": f"{paths.PYTHON.parent}{os.pathsep}{env.get('PATH', '')}",
    })
    return env


def bin_path(script: str) -> str:
    return str(paths.pyflink_home() / "bin" / script)


def service_pid_files(services: tuple[str, ...]) -> list[Path]:
    """Flink's own pid files of these services (flink-console.sh writes flink-<user>-<service>.pid):
    standalonesession, taskexecutor, sql-gateway."""
    if not PID_DIR.exists():
        return []
    return sorted(path for service in services for path in PID_DIR.glob(f"flink-*-{service}.pid"))


def service_pids(services: tuple[str, ...]) -> list[int]:
    """Live pids of these services from their pid files (whoever started them)."""
    return [int(token) for pid_file in service_pid_files(services) for token in pid_file.read_text().split()
            if token.isdigit() and pid_alive(int(token))]


def stop_services(services: tuple[str, ...]) -> bool:
    """Stops what these services' pid files name and removes the files; True when something ran."""
    running = service_pids(services)
    for pid in running:
        stop_pid(pid, timeout=20)
    for pid_file in service_pid_files(services):
        pid_file.unlink()
    return bool(running)


def pids() -> list[int]:
    """Live JobManager/TaskManager pids from Flink's own pid files (not the SQL Gateway's)."""
    return service_pids(DAEMONS)


def daemon_pids(daemon: str) -> list[int]:
    """Live pids of 'jobmanager' or 'taskmanager' (all TaskManagers) from Flink's pid files (whoever started
    them)."""
    return service_pids(({"jobmanager": "standalonesession", "taskmanager": "taskexecutor"}[daemon],))


def program_pids() -> dict[str, list[int]]:
    return {daemon: daemon_pids(daemon) for daemon in PROGRAMS}


def log_hint() -> Path:
    return LOG_DIR


def running() -> bool:
    """Any of our Flink daemons is alive (whether or not the REST API answers yet)."""
    return bool(pids())


def rest(settings: Settings, path: str, method: str = "GET", body: dict | None = None, timeout: float = 5):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(settings.flink.rest_url.rstrip("/") + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def overview(settings: Settings) -> dict | None:
    try:
        return rest(settings, "/overview", timeout=2)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def ports(settings: Settings) -> list[tuple[int, str]]:
    return [(rest_host_port(settings)[1], "Flink REST / web UI"),
            (settings.flink.rpc_port, "Flink JobManager RPC")]


def prepare(settings: Settings) -> None:
    """Before the supervisor's first start: the rendered configuration and the state folders."""
    require_java()
    if not any(paths.FLINK_LIB_DIR.glob("flink-dist*.jar")):
        raise StackError("Flink lib folder .deps/flink-lib is not assembled: run `make setup`")
    render_conf(settings)
    check_reporter_ports(settings)
    for folder in (LOG_DIR, PID_DIR, CHECKPOINT_DIR, SAVEPOINT_DIR):
        folder.mkdir(parents=True, exist_ok=True)
    # Only files of dead daemons (of any Flink service, the SQL Gateway's too): a JobManager an older `up`
    # started may live on.
    for pid_file in sorted(PID_DIR.glob("flink-*.pid")):
        if not any(token.isdigit() and pid_alive(int(token)) for token in pid_file.read_text().split()):
            pid_file.unlink()


def program(settings: Settings, daemon: str, name: str | None = None) -> Program:
    """JobManager or a TaskManager as its own foreground program (`<x>.sh start-foreground` execs the JVM, so
    the pid is Java's): the supervisor restarts each alone. Their logs go to Flink's usual files. `name`: a
    TaskManager after the first (taskmanager-2, ...), under an identity of its own (pid, log file names)."""
    script = {"jobmanager": "jobmanager.sh", "taskmanager": "taskmanager.sh"}[daemon]
    name = name or daemon
    env = flink_env()
    env["STD_REDIRECT_TO_FILE"] = "true"  # stdout/err to log/*.out|.err, no second copy of the log on stdout
    title = "Flink JobManager" if daemon == "jobmanager" else "Flink TaskManager"
    if name != daemon:
        env["FLINK_IDENT_STRING"] = f"{env.get('USER') or getpass.getuser()}-{name}"
        title += f" {name.rsplit('-', 1)[1]}"
    return Program(name=name, title=title, argv=[bin_path(script), "start-foreground"], env=env,
                   log_file=LOG_DIR / f"{name}.console", log_hint=LOG_DIR, stop_timeout=30.0,
                   cwd=paths.REPO)


def programs(settings: Settings) -> list[Program]:
    return [program(settings, "jobmanager"),
            *(program(settings, "taskmanager", name) for name in taskmanager_names(settings))]


def ready(settings: Settings) -> bool:
    """The JobManager answers and every TaskManager has registered all its slots."""
    info = overview(settings)
    count = taskmanager_count(settings)
    return bool(info) and info.get("taskmanagers", 0) >= count and \
        info.get("slots-total", 0) >= count * slots_per_taskmanager(settings)



def exec_foreground(settings: Settings, script: str, args: list[str]) -> None:
    """Container entry point: replaces this process by one of Flink's bin/ scripts in the foreground
    (docker-compose.yml), with the rendered configuration and the state folders in place."""
    render_conf(settings)
    for folder in (LOG_DIR, PID_DIR, CHECKPOINT_DIR, SAVEPOINT_DIR):
        folder.mkdir(parents=True, exist_ok=True)
    os.execve(bin_path(script), [script, *args], flink_env())


def run_foreground(settings: Settings, daemon: str) -> None:
    """One Flink daemon (jobmanager or taskmanager) in the foreground."""
    exec_foreground(settings, {"jobmanager": "jobmanager.sh", "taskmanager": "taskmanager.sh"}[daemon],
                    ["start-foreground"])


def stop(settings: Settings) -> bool:
    return stop_services(DAEMONS)


def healthy(settings: Settings) -> bool:
    """The JobManager answers with a TaskManager (jobs can run; `status` tells how many of them are up)."""
    info = overview(settings)
    return bool(info) and info.get("taskmanagers", 0) >= 1


def taskmanagers(settings: Settings) -> list[dict]:
    """The TaskManagers registered with the JobManager (REST /taskmanagers): id, path, slots; [] if none."""
    try:
        return rest(settings, "/taskmanagers", timeout=2).get("taskmanagers", [])
    except (urllib.error.URLError, OSError, ValueError):
        return []
