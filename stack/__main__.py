"""python -m stack: control the local MarketPulse stack (see README 'Run it')."""

from __future__ import annotations

import argparse
import os
import sys
import time

from marketpulse.config import ConfigError, load_settings
from stack import flink, kafka, postgres
from stack.components import COMPONENTS
from stack.errors import StackError
from stack.log import say


def cmd_setup(args, settings) -> int:
    from stack.setup import setup

    setup(browser=args.browser)
    return 0


def cmd_up(args, settings) -> int:
    from stack.setup import setup

    started_at = time.monotonic()
    setup()
    started = []
    for component in COMPONENTS:
        if component.healthy(settings):
            continue
        if component.running():
            # Ours, but not answering: restart it rather than start a second copy.
            say(f"{component.NAME}: running but not healthy, restarting")
            component.stop(settings)
        component.start(settings)
        started.append(component.NAME)
    if not started:
        say("stack already up, nothing to do (make status for details)")
    else:
        # Topics and schema may be new even when the processes were up already.
        say(f"stack up in {time.monotonic() - started_at:.1f}s (started: {', '.join(started)})")
    kafka.ensure_topics(settings)
    postgres.apply_schema(settings)
    print_status(settings)
    return 0


def cmd_init(args, settings) -> int:
    """Topics and schema on already-running services (docker-compose's one-shot `init` service)."""
    from stack.proc import wait_until

    wait_until(lambda: kafka.metadata_ready(settings), 120, f"Kafka at {settings.kafka.bootstrap_servers}")
    kafka.ensure_topics(settings)
    wait_until(lambda: postgres.reachable(settings), 120, f"PostgreSQL at {settings.postgres.host}")
    postgres.apply_schema(settings)
    say("topics and schema are in place")
    return 0


def cmd_submit_all(args, settings) -> int:
    from stack.jobs import submit_all

    submit_all(settings)
    return 0


def cmd_check(args, settings) -> int:
    from stack.check import report

    print(report(settings))
    return 0


def cmd_demo(args, settings) -> int:
    from stack.demo import run_demo

    return run_demo(settings, up=lambda: cmd_up(args, settings))


def cmd_flink_daemon(args, settings) -> int:
    flink.run_foreground(settings, args.daemon)
    return 0


def cmd_down(args, settings) -> int:
    stopped = []
    for component in reversed(COMPONENTS):
        if component.stop(settings):
            stopped.append(component.NAME)
    say(f"stopped: {', '.join(stopped)}" if stopped else "nothing of ours was running")
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
         f"{info.get('taskmanagers', 0)} TM, {info.get('slots-available', 0)}/{info.get('slots-total', 0)} "
         f"slots free, {info.get('jobs-running', 0)} jobs running" if info else "web UI + REST"),
    ]
    print(f"{'component':<15}{'address':<26}{'health':<9}detail")
    for name, address, ok, detail in rows:
        print(f"{name:<15}{address:<26}{'up' if ok else 'DOWN':<9}{detail}")


def cmd_status(args, settings) -> int:
    print_status(settings)
    return 0 if all(c.healthy(settings) for c in COMPONENTS) else 1


def cmd_logs(args, settings) -> int:
    files = {
        "postgres": [postgres.log_file()],
        "kafka": [kafka.LOG_FILE],
        "flink": sorted(flink.LOG_DIR.glob("*.log")) if flink.LOG_DIR.exists() else [],
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
    from stack.sql import run_sql_script

    return run_sql_script(settings, args.script, extra=args.rest)


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
    sub.add_parser("submit-all", help="submit the DataStream job and the SQL scripts (skips running ones)"
                   ).set_defaults(func=cmd_submit_all)
    sub.add_parser("check", help="is data flowing? rows per table, newest window, running jobs"
                   ).set_defaults(func=cmd_check)
    sub.add_parser("demo", help="the whole system until Ctrl-C: stack, jobs, generator, dashboard"
                   ).set_defaults(func=cmd_demo)
    p = sub.add_parser("flink-daemon", help="run a Flink daemon in the foreground (containers)")
    p.add_argument("daemon", choices=("jobmanager", "taskmanager"))
    p.set_defaults(func=cmd_flink_daemon)
    sub.add_parser("status", help="each component, its address and health").set_defaults(func=cmd_status)
    p = sub.add_parser("logs", help="the last lines of the components' logs")
    p.add_argument("component", nargs="?", choices=("postgres", "kafka", "flink"))
    p.add_argument("-n", "--lines", type=int, default=40)
    p.set_defaults(func=cmd_logs)
    sub.add_parser("env", help="print exports for running flink / sql-client.sh by hand").set_defaults(
        func=cmd_env)
    for name in ("flink", "sql-client"):
        p = sub.add_parser(name, help=f"run Flink's {name} with the stack's configuration and jars")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=cmd_exec)
    p = sub.add_parser("sql", help="run a Flink SQL script (sql/*.sql) with sql-client.sh -f on the cluster")
    p.add_argument("script")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_sql)
    args = parser.parse_args(argv)
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
