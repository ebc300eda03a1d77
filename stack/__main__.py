"""python -m stack: control the local MarketPulse stack (see README 'Run it')."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from marketpulse.config import ConfigError, load_settings
from stack import flink, kafka, paths, postgres, prometheus, sqlgateway
from stack.components import COMPONENTS, Component
from stack.errors import StackError
from stack.log import say


def cmd_setup(args, settings) -> int:
    from stack.setup import setup
    from stack.sql import precompile_plans

    setup(browser=args.browser)
    postgres.ensure_secrets(settings)  # the plans hold the writer's password, so it must be the one `up` uses
    precompile_plans(settings, settings.jobs.sql_scripts)  # so the first `make demo` runs from a plan too
    return 0


def cmd_up(args, settings) -> int:
    from stack import supervisor
    from stack.setup import setup

    started_at, started_wall = time.monotonic(), time.time()
    setup()
    started = []
    if supervisor.pid() is None:
        left = supervisor.kill_leftovers()  # children of a supervisor that was itself killed
        if left:
            say(f"stopped what a dead supervisor left running ({', '.join(left)}); starting them anew")
        unsupervised = supervisor.alive_unsupervised()
        # Only what is not running: processes an older `make up` started stay as they are (a missing
        # TaskManager means a new TaskManager, not a new cluster), the rest runs under the supervisor.
        missing = [name for name in supervisor.PROGRAMS if name not in unsupervised]
        if not missing:
            if all(c.healthy(settings) for c in COMPONENTS):
                say("stack already up, nothing to do; it runs without a supervisor (started by an older "
                    "`make up`): `make down && make up` puts it under one")
                return _topics_schema_status(settings)
            raise StackError("the stack runs without a supervisor (an older `make up`) and is not healthy: "
                             "run `make down`, then `make up`")
        _start_supervised(settings, missing)
        started = [c.NAME for c in COMPONENTS if c.NAME in {supervisor.COMPONENT[n] for n in missing}]
    elif not all(c.healthy(settings) for c in COMPONENTS):
        supervised = supervisor.read_state().get("programs", {})
        gone = [name for name in supervisor.PROGRAMS
                if name not in supervised and name not in supervisor.alive_unsupervised()]
        if gone:  # started by an older `up`, died since, and nobody restarts it
            raise StackError(f"{', '.join(gone)} (started by an older `make up`, not supervised) is down: "
                             "run `make down`, then `make up`")
        say("the supervisor is restarting what is down; waiting for it (make status for details)")
    for component in COMPONENTS:
        _wait_ready(settings, component, started_wall)
    if not started:
        say("stack already up, nothing to do (make status for details)")
    else:
        say(f"stack up in {time.monotonic() - started_at:.1f}s (started: {', '.join(started)})")
    return _topics_schema_status(settings)


def _start_supervised(settings, names: list[str]) -> None:
    """Checks what would make a start fail (one line each), prepares state folders, starts the supervisor
    for the programs `names`."""
    from stack import supervisor
    from stack.proc import ensure_port_free, require_java

    require_java()
    components = [c for c in COMPONENTS if set(c.PROGRAMS) & set(names)]
    for component in components:
        for port, what in component.ports(settings):
            if component.NAME != "flink" or "jobmanager" in names:  # a TaskManager alone binds no fixed port
                ensure_port_free(port, what)
    for component in components:
        component.prepare(settings)
    if len(names) < len(supervisor.PROGRAMS):
        say(f"{', '.join(n for n in supervisor.PROGRAMS if n not in names)} run(s) without a supervisor "
            "(started by an older `make up`; `make down && make up` puts everything under one)")
    say(f"starting the supervisor; it starts and watches {', '.join(names)} "
        f"(events: {supervisor.log_file()})")
    supervisor.start_daemon(only=None if len(names) == len(supervisor.PROGRAMS) else names)


def _wait_ready(settings, component: Component, since: float) -> None:
    """Waits until the component answers; fails fast, naming its log, if its process exits meanwhile."""
    from stack import supervisor
    from stack.proc import log_excerpt

    timeout = component.READY_TIMEOUT_S
    deadline = time.monotonic() + timeout
    while not component.ready(settings):
        programs = supervisor.read_state().get("programs", {})
        for name in [name for name in programs if supervisor.kind(name) in component.PROGRAMS]:
            state = programs[name]
            if (state.get("last_exit_at") or 0) > since:
                title = {p.name: p for p in supervisor.programs(settings)}[name].title
                say(f"{title}: {state['last_exit']}; the supervisor retries it with backoff "
                    "(`make down` stops it)")
                for line in log_excerpt(state["log"]):
                    say(f"  | {line}")
                raise StackError(f"{title} exited during start-up; see {state['log']}")
        if supervisor.pid() is None:
            raise StackError(f"the supervisor exited; see {supervisor.home() / 'daemon.out'}")
        if time.monotonic() > deadline:
            raise StackError(f"{component.NAME} did not become ready within {timeout:.0f}s; "
                             f"see {component.log_hint()}")
        time.sleep(0.3)


def _topics_schema_status(settings) -> int:
    # Every path of `up` ends here: topics, roles and schema, new or not, whether the processes were started
    # now or were up already.
    kafka.ensure_topics(settings)
    postgres.provision(settings)
    print_status(settings)
    print_processes(settings)
    return 0


def cmd_init(args, settings) -> int:
    """Topics, roles and schema on already-running services (docker-compose's one-shot `init` service)."""
    from stack.proc import wait_until

    wait_until(lambda: kafka.metadata_ready(settings), 120, f"Kafka at {settings.kafka.bootstrap_servers}")
    kafka.ensure_topics(settings)
    wait_until(lambda: postgres.reachable(settings), 120, f"PostgreSQL at {settings.postgres.host}")
    postgres.ensure_service_roles(settings)
    postgres.apply_schema(settings)
    say("topics, roles, schema and grants are in place")
    return 0


def cmd_submit_all(args, settings) -> int:
    from stack.jobs import submit_all, watch

    submit_all(settings)
    if args.watch:
        watch(settings)
    return 0


def cmd_submit_datastream(args, settings) -> int:
    from stack.jobs import submit_datastream

    job_id = submit_datastream(settings, savepoint=args.savepoint, args=args.rest, resume=not args.fresh)
    if job_id:
        print(job_id)
    return 0


def cmd_cancel(args, settings) -> int:
    from stack.jobs import cancel

    cancel(settings, args.job_id)
    say(f"cancelled {args.job_id}; the registry will not resubmit it")
    return 0


def cmd_stop_job(args, settings) -> int:
    """`flink stop` (savepoint, then the job finishes) after marking it deliberately stopped."""
    from stack import registry

    registry.mark(args.job_id, registry.FINISHED)
    return subprocess.run([flink.bin_path("flink"), "stop", args.job_id], env=flink.flink_env()).returncode


def cmd_redeploy(args, settings) -> int:
    from stack.redeploy import redeploy

    job_args = (["--parallelism", str(args.parallelism)] if args.parallelism else []) + args.rest
    print(redeploy(settings, args.job_id, job_args))
    return 0


def cmd_supervise(args, settings) -> int:
    from stack import paths, supervisor

    if Path(args.stack_dir).resolve() != paths.STACK_DIR.resolve():
        raise StackError(f"supervise {args.stack_dir}: this environment's stack dir is {paths.STACK_DIR}")
    return supervisor.main(settings, only=args.only.split(",") if args.only else None)


def cmd_check(args, settings) -> int:
    from stack.check import report

    print(report(settings))
    return 0


def cmd_demo(args, settings) -> int:
    from stack.demo import run_demo
    from stack.setup import setup
    from stack.sql import precompile_plans

    setup()
    postgres.ensure_secrets(settings)
    precompile_plans(settings, settings.jobs.sql_scripts)  # nothing to do after `make setup`
    return run_demo(settings, up=lambda: cmd_up(args, settings))


def cmd_flink_daemon(args, settings) -> int:
    if args.daemon == "sqlgateway":
        sqlgateway.run_foreground(settings)
    if args.daemon == "prometheus":
        prometheus.run_foreground(settings)
    flink.run_foreground(settings, args.daemon)
    return 0


def cmd_down(args, settings) -> int:
    from stack import supervisor

    owners = {supervisor.component_of(name) for name in supervisor.children_pids()}
    was_running = [c.NAME for c in reversed(COMPONENTS) if c.running() or c.NAME in owners]
    stopped_supervisor = supervisor.stop_daemon()  # it stops its children first, in reverse start order
    if stopped_supervisor:
        say(f"supervisor (pid {stopped_supervisor}) stopped, and the processes it ran")
    supervisor.kill_leftovers()
    for component in reversed(COMPONENTS):
        component.stop(settings)  # anything still running unsupervised (an older `make up`)
    say(f"stopped: {', '.join(was_running)}" if was_running else "nothing of ours was running")
    return 0


def print_status(settings) -> None:
    host, rest_port = flink.rest_host_port(settings)
    info = flink.overview(settings) or {}
    rows = [
        ("PostgreSQL", f"{settings.postgres.host}:{settings.postgres.port}", postgres.healthy(settings),
         f"db {settings.postgres.database}"),
        ("Kafka (KRaft)", settings.kafka.bootstrap_servers, kafka.healthy(settings),
         f"controller :{settings.kafka.controller_port}"),
        ("Flink", settings.flink.rest_url, flink.healthy(settings),
         f"{info.get('taskmanagers', 0)}/{flink.taskmanager_count(settings)} TM, "
         f"{info.get('slots-available', 0)}/{info.get('slots-total', 0)} "
         f"slots free, {info.get('jobs-running', 0)} jobs running" if info else "web UI + REST"),
        ("SQL Gateway", settings.flink.sql_gateway_url, sqlgateway.healthy(settings), "REST, submits SQL"),
        ("Prometheus", prometheus.url(settings), prometheus.healthy(settings),
         "scrapes Flink, generator, alerts, dashboard"),
    ]
    print(f"{'component':<15}{'address':<26}{'health':<9}detail")
    for name, address, ok, detail in rows:
        print(f"{name:<15}{address:<26}{'up' if ok else 'DOWN':<9}{detail}")


def print_processes(settings) -> None:
    """The supervisor's view: each process, its pid, up/DOWN, uptime, restarts and last exit."""
    from stack import supervisor

    sup = supervisor.pid()
    if sup is None:
        unsupervised = supervisor.alive_unsupervised()
        print("no supervisor running" + (f" ({', '.join(unsupervised)} started by an older `make up`: "
                                         "`make down && make up` supervises them)" if unsupervised else ""),
              file=sys.stderr)
        return
    state = supervisor.read_state()
    now = time.time()
    print(f"\nsupervisor pid {sup}, up {supervisor.format_duration(now - state.get('started_at', now))}; "
          f"events: {supervisor.log_file()}")
    print(f"{'process':<15}{'pid':<9}{'state':<7}{'uptime':<9}{'restarts':<10}last exit")
    programs = state.get("programs", {})
    configured = supervisor.program_names(settings)
    # and what it runs beyond them, e.g. after flink.taskmanagers was changed
    for name in configured + [name for name in programs if name not in configured]:
        p = programs.get(name)
        if p is None:  # left to an older `make up`'s daemon
            print(f"{name:<15}{'-':<9}{'-':<7}{'-':<9}{'-':<10}not supervised (an older `up` started it)")
            continue
        up = p.get("state") == "up"
        last = p.get("last_exit") or "-"
        if p.get("last_exit_at"):
            last += f" ({supervisor.format_duration(now - p['last_exit_at'])} ago)"
        if not up and p.get("next_start_at"):
            last += f"; restart in {supervisor.format_duration(p['next_start_at'] - now)}"
        print(f"{name:<15}{p.get('pid') or '-'!s:<9}{'up' if up else 'DOWN':<7}"
              f"{supervisor.format_duration(now - p['started_at']) if up else '-':<9}"
              f"{p.get('restarts', 0):<10}{last}")
    for done in state.get("resubmissions", [])[-4:]:
        print(f"resubmitted '{done['name']}' as {done.get('job_id')} from {done.get('restored_from')}"
              f" ({supervisor.format_duration(now - done['at'])} ago)")
    registered = flink.taskmanagers(settings)
    if registered:  # as the web UI and REST name them (the processes above do not say which is which)
        print(f"\n{'Flink TaskManager (REST id)':<44}slots free")
        for tm in sorted(registered, key=lambda tm: tm.get("id", "")):
            print(f"{tm.get('id', '?'):<44}{tm.get('freeSlots', '?')}/{tm.get('slotsNumber', '?')}")


def cmd_status(args, settings) -> int:
    print_status(settings)
    print_processes(settings)
    return 0 if all(c.healthy(settings) for c in COMPONENTS) else 1


def cmd_logs(args, settings) -> int:
    from stack import supervisor

    files = {
        "supervisor": [supervisor.log_file()],
        "postgres": [postgres.log_hint()],
        "kafka": [kafka.log_hint()],
        "flink": sorted(flink.LOG_DIR.glob("*.log")) if flink.LOG_DIR.exists() else [],
        "prometheus": [prometheus.log_hint()],
    }
    chosen = [args.component] if args.component else list(files)
    for name in chosen:
        for path in files[name]:
            print(f"==> {path} <==")
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()
                print("\n".join(lines[-args.lines:]))
    return 0


def cmd_env(args, settings) -> int:
    """Exports for typing `flink run` / `sql-client.sh` by hand: eval "$(python -m stack env)"."""
    env = flink.flink_env()
    for key in ("FLINK_HOME", "FLINK_CONF_DIR", "FLINK_LIB_DIR", "FLINK_OPT_DIR", "FLINK_LOG_DIR",
                "FLINK_PID_DIR", "PATH"):
        print(f"export {key}='{env[key]}'")
    print(f"export PATH=\"{env['FLINK_HOME']}/bin:$PATH\"")
    return 0


def cmd_exec(args, settings) -> int:
    """Runs one of Flink's bin/ scripts (flink, sql-client.sh) with the stack's environment."""
    script = {"flink": "flink", "sql-client": "sql-client.sh"}[args.command]
    if not flink.CONF_DIR.exists():
        flink.render_conf(settings)
    os.execve(flink.bin_path(script), [script, *args.rest], flink.flink_env())


def cmd_sql(args, settings) -> int:
    """Runs the script in the terminal; a streaming script that names its job is recorded in the registry."""
    from stack import jobs, registry
    from stack.sql import run_sql_script

    script = Path(args.script)
    found = jobs.PIPELINE_NAME.search(jobs.composed(script)) if script.is_file() else None
    if not found:
        return run_sql_script(settings, args.script, extra=args.rest, gateway=args.gateway)
    name = found.group(1)
    with jobs._lock():
        if name in jobs.running_jobs(settings):
            say(f"Flink: '{name}' is already running (make cancel JOB=<id> first to replace it)")
            return 0
        code = run_sql_script(settings, args.script, extra=args.rest, gateway=args.gateway)
        job_id = jobs.running_jobs(settings).get(name)
        if code == 0 and job_id:
            registry.record(name, "sql", str(paths.shown(script.resolve())), job_id)
            say(f"'{name}' is job {job_id}, recorded in {registry.registry_file()}")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup", help="install what is missing: jars (Maven), PostgreSQL (apt)")
    p.add_argument("--browser", action="store_true", help="also Debian's chromium, for the browser tests")
    p.set_defaults(func=cmd_setup)
    sub.add_parser("up", help="start PostgreSQL, Kafka and Flink (no-op when up)").set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop what `up` started, nothing else").set_defaults(func=cmd_down)
    sub.add_parser("init", help="create topics and apply the schema on running services (containers)"
                   ).set_defaults(func=cmd_init)
    p = sub.add_parser("submit-all", help="submit the DataStream job and the SQL scripts (skips running "
                       "ones; registered ones resume from their newest checkpoint)")
    p.add_argument("--watch", action="store_true",
                   help="then keep them running: resubmit what a JobManager restart lost (containers)")
    p.set_defaults(func=cmd_submit_all)
    p = sub.add_parser("submit-datastream", help="submit the DataStream job (recorded; resumes last state)")
    p.add_argument("--savepoint", help="start from this savepoint or retained checkpoint")
    p.add_argument("--fresh", action="store_true", help="ignore the registry's last checkpoint")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for jobs/market_metrics.py")
    p.set_defaults(func=cmd_submit_datastream)
    p = sub.add_parser("cancel", help="cancel a job; the supervisor will not resubmit it")
    p.add_argument("job_id")
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser("stop-job", help="stop a job with a savepoint (flink stop); not resubmitted")
    p.add_argument("job_id")
    p.set_defaults(func=cmd_stop_job)
    p = sub.add_parser("redeploy", help="stop the DataStream job with a savepoint and resume it at another "
                       "parallelism and/or with the current code (rescale, upgrade)")
    p.add_argument("job_id")
    p.add_argument("--parallelism", type=int, help="parallelism of the keyed operator and the sinks")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="further arguments for jobs/market_metrics.py")
    p.set_defaults(func=cmd_redeploy)
    p = sub.add_parser("supervise", help="the supervisor daemon (`up` starts it)")
    p.add_argument("stack_dir")
    p.add_argument("--only", help="comma-separated subset of postgres,kafka,jobmanager,taskmanager (every "
                   "TaskManager),sqlgateway,prometheus")
    p.set_defaults(func=cmd_supervise)
    sub.add_parser("check", help="is data flowing? rows per table, newest window, running jobs"
                   ).set_defaults(func=cmd_check)
    sub.add_parser("demo", help="the whole system until Ctrl-C: stack, jobs, generator, dashboard"
                   ).set_defaults(func=cmd_demo)
    p = sub.add_parser("flink-daemon",
                       help="a Flink daemon, the SQL Gateway or Prometheus in the foreground (containers)")
    p.add_argument("daemon", choices=("jobmanager", "taskmanager", "sqlgateway", "prometheus"))
    p.set_defaults(func=cmd_flink_daemon)
    sub.add_parser("status", help="each component, its address and health").set_defaults(func=cmd_status)
    p = sub.add_parser("logs", help="the last lines of the components' logs")
    p.add_argument("component", nargs="?", choices=("supervisor", "postgres", "kafka", "flink", "prometheus"))
    p.add_argument("-n", "--lines", type=int, default=40)
    p.set_defaults(func=cmd_logs)
    sub.add_parser("env", help="print exports for running flink / sql-client.sh by hand").set_defaults(
        func=cmd_env)
    for name in ("flink", "sql-client"):
        p = sub.add_parser(name, help=f"run Flink's {name} with the stack's configuration and jars")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=cmd_exec)
    p = sub.add_parser("sql", help="run a Flink SQL script (sql/*.sql) with sql-client.sh -f on the cluster")
    p.add_argument("--gateway", action="store_true",
                   help="through the stack's SQL Gateway instead of sql-client.sh (no JVM start)")
    p.add_argument("script")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_sql)
    args = parser.parse_args(argv)
    if getattr(args, "rest", None) and args.rest[0] == "--":  # `... -- --parallelism 2`: the rest passes on
        args.rest = args.rest[1:]
    try:
        settings = load_settings()
        return args.func(args, settings)
    except (StackError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
