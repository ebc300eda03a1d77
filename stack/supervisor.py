"""The stack's supervisor: one detached daemon (`python -m stack supervise`, started by `up`) that runs
PostgreSQL, Kafka, the Flink JobManager and the Flink TaskManager(s) as its own foreground children, and
restarts whichever dies, alone, after a bounded exponential backoff: systemd's Restart=always, a Kubernetes
pod's restartPolicy. A TaskManager that dies gets a new TaskManager; the JobManager and its jobs stay.

When the JobManager itself had to be restarted, its jobs are gone (a session cluster without HA forgets
them), so once the new cluster is healthy the supervisor resubmits the registered jobs it lost
(stack/registry.py, jobs.lost_jobs) from their newest retained checkpoint.

Files in <stack dir>/supervisor/: supervisor.pid; state.json (what `status` shows; read_state() for tests);
supervisor.log (one line per event: start, exit with its reason, restart after backoff, resubmission);
daemon.out (the daemon's own stdout/stderr, should it crash)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from stack import paths
from stack.components import COMPONENTS
from stack.proc import Program, pid_alive

# The kinds of process it runs, in start order (stop order is the reverse), and the component each belongs
# to. A kind may have several numbered instances: taskmanager, taskmanager-2, ... ([flink] taskmanagers).
PROGRAMS = tuple(name for component in COMPONENTS for name in component.PROGRAMS)
COMPONENT = {name: component.NAME for component in COMPONENTS for name in component.PROGRAMS}


def kind(name: str) -> str:
    """The PROGRAMS entry of a program: 'taskmanager-2' -> 'taskmanager'."""
    return name.split("-", 1)[0]


def component_of(name: str) -> str:
    return COMPONENT[kind(name)]

BACKOFF_INITIAL = 1.0   # seconds before the first restart
BACKOFF_MAX = 30.0      # the cap of the doubling
HEALTHY_RESET = 60.0    # a process that ran this long before dying starts the backoff again at 1 s
TICK = 0.25             # how often children are polled
JOB_POLL = 5.0          # how often the cluster's job states are copied into the registry


def backoff_delay(quick_exits: int) -> float:
    """Seconds before the next start, after `quick_exits` consecutive exits (each < HEALTHY_RESET)."""
    return min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** min(max(quick_exits - 1, 0), 16))


def exit_reason(returncode: int) -> str:
    """'killed by SIGKILL' for a signal (Popen's negative code), 'exit 1' for an exit status."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    if 128 < returncode < 160:  # a JVM or shell that caught the signal exits with 128 + its number
        try:
            return f"exit {returncode} ({signal.Signals(returncode - 128).name})"
        except ValueError:
            pass
    return f"exit {returncode}"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# --- files, and the API `status`, `up`, `down` and tests read -----------------------------------------

# Each takes the stack dir, so a test can watch a private stack's supervisor (default: this environment's).

def home(stack_dir: Path | None = None) -> Path:
    return Path(stack_dir or paths.STACK_DIR) / "supervisor"


def pid_file(stack_dir: Path | None = None) -> Path:
    return home(stack_dir) / "supervisor.pid"


def state_file(stack_dir: Path | None = None) -> Path:
    return home(stack_dir) / "state.json"


def log_file(stack_dir: Path | None = None) -> Path:
    return home(stack_dir) / "supervisor.log"


def pid(stack_dir: Path | None = None) -> int | None:
    """The live supervisor's pid, or None."""
    try:
        found = int(pid_file(stack_dir).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return found if pid_alive(found) else None


def read_state(stack_dir: Path | None = None) -> dict:
    """{'pid', 'started_at', 'programs': {name: {'pid', 'state', 'started_at', 'starts', 'restarts',
    'last_exit', 'last_exit_at', 'next_start_at', 'log'}}, 'resubmissions': [...]}; {} if there is none."""
    try:
        return json.loads(state_file(stack_dir).read_text())
    except (OSError, ValueError):
        return {}


def program_state(name: str, stack_dir: Path | None = None) -> dict:
    return read_state(stack_dir).get("programs", {}).get(name, {})


def program_pid(name: str, stack_dir: Path | None = None) -> int | None:
    """The live pid of one supervised program (e.g. 'taskmanager' for a chaos test to kill)."""
    found = program_state(name, stack_dir).get("pid")
    return found if found and pid_alive(found) else None


def wait_restarted(name: str, old_pid: int, timeout: float = 60.0, stack_dir: Path | None = None) -> dict:
    """Waits until `name` runs again under a new pid; returns its state. TimeoutError otherwise.
    (The process runs; whether it serves yet is the component's own check, e.g. flink.ready.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = program_state(name, stack_dir)
        if state.get("pid") not in (None, old_pid) and pid_alive(state["pid"]) and state.get("state") == "up":
            return state
        time.sleep(0.1)
    raise TimeoutError(f"{name} was not restarted within {timeout:.0f}s: {program_state(name, stack_dir)}")


def start_ticks(target: int) -> int | None:
    """The process's start time (clock ticks since boot): with the pid, it tells a reused pid apart."""
    try:
        return int(Path(f"/proc/{target}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def children_pids(state: dict | None = None) -> dict[str, int]:
    """Live pids the (possibly dead) supervisor last recorded for its children (same pid, same process)."""
    state = read_state() if state is None else state
    return {name: p["pid"] for name, p in state.get("programs", {}).items()
            if p.get("pid") and pid_alive(p["pid"]) and start_ticks(p["pid"]) == p.get("start_ticks")}


def start_daemon(timeout: float = 30.0, only: list[str] | None = None) -> int:
    """Starts `python -m stack supervise` detached (it outlives `up`); returns its pid once it runs. `only`:
    a subset of PROGRAMS, when the others run unsupervised (an older `make up` started them)."""
    home().mkdir(parents=True, exist_ok=True)
    state_file().unlink(missing_ok=True)
    with open(home() / "daemon.out", "ab") as out:
        # The stack dir on the command line lets a person (and `down`'s check) see whose supervisor it is.
        proc = subprocess.Popen([sys.executable, "-m", "stack", "supervise", str(paths.STACK_DIR),
                                 *(["--only", ",".join(only)] if only else [])],
                                cwd=paths.REPO, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            from stack.errors import StackError

            raise StackError(f"the supervisor exited at once ({exit_reason(proc.returncode)}); "
                             f"see {home() / 'daemon.out'}")
        if read_state().get("pid") == proc.pid:
            return proc.pid
        time.sleep(0.1)
    return proc.pid


def stop_daemon(timeout: float = 120.0) -> int | None:
    """SIGTERM to the supervisor, which stops its children (reverse order) and exits; returns its pid."""
    running = pid()
    if running is None:
        return None
    os.kill(running, signal.SIGTERM)
    os.kill(running, signal.SIGCONT)  # a test may have paused it (SIGSTOP) to keep something down
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(running):
        time.sleep(0.2)
    if pid_alive(running):
        os.kill(running, signal.SIGKILL)
    return running


def kill_leftovers(timeout: float = 30.0) -> list[str]:
    """Children a dead supervisor left behind (SIGKILLed supervisor): stopped, so ports are free again."""
    left = children_pids()
    for name in reversed(list(left)):  # state.json lists them in start order
        stop_signal = signal.SIGINT if name == "postgres" else signal.SIGTERM
        _terminate(left[name], stop_signal, timeout, group=True)
        _kill_group(left[name])
    return list(left)


def _terminate(target: int, sig: int, timeout: float, group: bool = False) -> None:
    """sig to the process (or its whole group), SIGKILL after timeout if it is still there."""
    send = os.killpg if group else os.kill
    try:
        send(target, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(target):
        time.sleep(0.1)
    if pid_alive(target):
        try:
            send(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --- the daemon ---------------------------------------------------------------------------------------

class Child:
    """One supervised program: its process, and the facts `status` shows."""

    def __init__(self, program: Program):
        self.program = program
        self.proc: subprocess.Popen | None = None
        self.ticks: int | None = None
        self.started_at: float | None = None     # wall clock, for status
        self.started_mono = 0.0
        self.starts = 0
        self.quick_exits = 0
        self.last_exit: str | None = None
        self.last_exit_at: float | None = None
        self.next_start: float | None = 0.0     # monotonic; None = not to be started (stopping)
        self.next_start_at: float | None = None  # wall clock of next_start, for status

    def as_state(self) -> dict:
        alive = self.proc is not None and self.proc.poll() is None
        return {
            "pid": self.proc.pid if alive else None,
            "start_ticks": self.ticks if alive else None,
            "state": "up" if alive else ("backoff" if self.next_start is not None else "stopped"),
            "started_at": self.started_at if alive else None,
            "starts": self.starts,
            "restarts": max(self.starts - 1, 0),
            "last_exit": self.last_exit,
            "last_exit_at": self.last_exit_at,
            "next_start_at": None if alive else self.next_start_at,
            "log": str(self.program.log_hint or self.program.log_file),
        }


class Supervisor:
    def __init__(self, settings, programs: list[Program]):
        self.settings = settings
        self.children = {p.name: Child(p) for p in programs}
        self.stopping = False
        self.started_at = time.time()
        self.failed_resubmits: dict[str, float] = {}  # job name -> when its resubmission failed
        self.resubmitter: threading.Thread | None = None
        self.resubmissions: list[dict] = []
        self.next_job_poll = 0.0
        self._log_lock = threading.Lock()
        self._state_lock = threading.Lock()

    # One line per event, for people: `make logs C=supervisor`.
    def log(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n"
        with self._log_lock, open(log_file(), "a") as out:
            out.write(line)

    def write_state(self) -> None:
        state = {"pid": os.getpid(), "started_at": self.started_at, "stack_dir": str(paths.STACK_DIR),
                 "stopping": self.stopping, "updated_at": time.time(),
                 "programs": {name: child.as_state() for name, child in self.children.items()},
                 "resubmitting": bool(self.resubmitter and self.resubmitter.is_alive()),
                 "resubmissions": self.resubmissions[-20:]}
        with self._state_lock:  # the job thread writes it too
            tmp = state_file().with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1))
            os.replace(tmp, state_file())

    def start(self, child: Child) -> None:
        program = child.program
        program.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(program.log_file, "ab") as out:
            try:
                child.proc = subprocess.Popen(
                    program.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env=program.env, cwd=program.cwd, user=program.user, group=program.user,
                    extra_groups=[] if program.user else None,
                    # Its own process group, like a systemd unit's cgroup: stopping it, or cleaning up after
                    # it died, reaches its helpers too (PostgreSQL backends, PyFlink workers, subshells).
                    process_group=0)
            except OSError as err:  # e.g. the binary vanished: counts as an exit, retried with backoff
                child.proc = None
                self.exited(child, f"could not start: {err}", ran=0.0)
                return
        child.starts += 1
        child.ticks = start_ticks(child.proc.pid)
        child.started_at, child.started_mono = time.time(), time.monotonic()
        child.next_start = child.next_start_at = None
        if program.pid_file:
            program.pid_file.write_text(f"{child.proc.pid}\n")
        self.log(f"{program.name}: started, pid {child.proc.pid}"
                 + (f" (restart {child.starts - 1})" if child.starts > 1 else ""))

    def exited(self, child: Child, reason: str, ran: float) -> None:
        child.last_exit, child.last_exit_at = reason, time.time()
        if child.program.pid_file:
            child.program.pid_file.unlink(missing_ok=True)
        if self.stopping:
            self.log(f"{child.program.name}: stopped ({reason})")
            return
        child.quick_exits = 1 if ran >= HEALTHY_RESET else child.quick_exits + 1
        delay = backoff_delay(child.quick_exits)
        child.next_start = time.monotonic() + delay
        child.next_start_at = time.time() + delay
        self.log(f"{child.program.name}: exited after {format_duration(ran)}: {reason}; "
                 f"restarting in {delay:g}s")

    def tick(self) -> bool:
        """Reaps and restarts; returns whether anything changed."""
        changed = False
        now = time.monotonic()
        for child in self.children.values():
            if child.proc is not None and child.proc.poll() is not None:
                code = child.proc.returncode
                _kill_group(child.proc.pid)  # what it left behind would hold ports or shared memory
                child.proc = None
                self.exited(child, exit_reason(code), ran=now - child.started_mono)
                changed = True
            if child.proc is None and child.next_start is not None and now >= child.next_start:
                self.start(child)
                changed = True
        changed |= self.follow_jobs()
        return changed

    # --- jobs ---
    def follow_jobs(self) -> bool:
        """Every JOB_POLL seconds, in a thread (REST calls and resubmissions must not delay restarts):
        job ends go into the registry, and jobs the cluster lost are resubmitted."""
        if time.monotonic() < self.next_job_poll or (self.resubmitter and self.resubmitter.is_alive()):
            return False
        self.next_job_poll = time.monotonic() + JOB_POLL
        self.resubmitter = threading.Thread(target=self.keep_jobs, daemon=True)
        self.resubmitter.start()
        return False

    def keep_jobs(self) -> None:
        from stack import flink, jobs, registry

        try:
            if not flink.healthy(self.settings):
                return
            jobs.record_job_ends(self.settings)
            retry_later = {name for name, at in self.failed_resubmits.items() if time.time() - at < 60}
            if not [e for e in jobs.lost_jobs(self.settings) if e["name"] not in retry_later]:
                return
            # Never while a person's submission is under way: next poll instead.
            with registry.submission_lock(blocking=False) as got:
                if not got:
                    return
                results = jobs.resume_registered(self.settings, report=self.log, skip=retry_later)
        except Exception:  # noqa: BLE001 - the JobManager may be down or starting: next poll
            return
        for result in results:
            if result.get("error"):
                self.failed_resubmits[result["name"]] = time.time()
            else:
                self.failed_resubmits.pop(result["name"], None)
        self.resubmissions += [dict(result, at=time.time()) for result in results]
        self.write_state()

    def stop_all(self) -> None:
        self.stopping = True
        for child in self.children.values():
            child.next_start = None
        for name in reversed(list(self.children)):  # started in this order
            child = self.children[name]
            if child.proc is None:
                continue
            started = time.monotonic()
            _terminate(child.proc.pid, child.program.stop_signal, child.program.stop_timeout, group=True)
            child.proc.wait()
            _kill_group(child.proc.pid)
            code = child.proc.returncode
            child.proc = None
            self.exited(child, exit_reason(code), ran=time.monotonic() - started)
            self.write_state()

    def run(self) -> None:
        home().mkdir(parents=True, exist_ok=True)
        left = kill_leftovers()
        if left:
            self.log(f"stopped children of a previous supervisor: {', '.join(left)}")
        pid_file().write_text(f"{os.getpid()}\n")

        def on_signal(signum, frame):
            self.stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.log(f"supervisor: started, pid {os.getpid()}, stack {paths.STACK_DIR}")
        self.write_state()
        last_write = time.monotonic()
        try:
            while not self.stopping:
                try:
                    changed = self.tick()
                except Exception as err:  # noqa: BLE001 - a supervisor that dies supervises nothing
                    self.log(f"supervisor: error {err!r}; carrying on")
                    changed = True
                if changed or time.monotonic() - last_write > 10:
                    self.write_state()
                    last_write = time.monotonic()
                time.sleep(TICK)
            self.log("supervisor: stopping")
            self.stop_all()
            if self.resubmitter is not None:
                self.resubmitter.join(timeout=30)  # its `flink run` fails fast without a JobManager
        finally:
            self.write_state()
            self.log("supervisor: stopped")
            pid_file().unlink(missing_ok=True)


def programs(settings, only: list[str] | None = None) -> list[Program]:
    """Every process of the stack in start order; `only`: those of these kinds (PROGRAMS entries)."""
    every = [program for component in COMPONENTS for program in component.programs(settings)]
    return [program for program in every if only is None or kind(program.name) in only]


def program_names(settings) -> list[str]:
    """The supervised processes' names in start order: PROGRAMS with every TaskManager of the settings
    (without building the programs: `status` needs no installed binaries)."""
    from stack import flink

    return [name for kind_ in PROGRAMS
            for name in (flink.taskmanager_names(settings) if kind_ == "taskmanager" else [kind_])]


def alive_unsupervised() -> list[str]:
    """Kinds of program running without this stack's supervisor (an older, daemonizing `make up` started
    them)."""
    mine = set(children_pids().values()) if pid() else set()
    found = {name: pids for component in COMPONENTS for name, pids in component.program_pids().items()}
    return [name for name in PROGRAMS if any(p not in mine for p in found[name])]


def main(settings, only: list[str] | None = None) -> int:
    if pid() not in (None, os.getpid()):
        print(f"a supervisor already runs for {paths.STACK_DIR} (pid {pid()})", file=sys.stderr)
        return 1
    Supervisor(settings, programs(settings, only)).run()
    return 0
