"""Runs a Flink SQL script with `sql-client.sh -f` against the session cluster.

Scripts in sql/ name connection settings as ${placeholders} (e.g. ${kafka_bootstrap_servers},
${postgres_jdbc_url}), never literal hosts, and take shared definitions from sql/include/ with
`-- include:` lines. Both are resolved (marketpulse/sqltemplate.py: compose, then render) from
conf/pipeline.toml (+ environment overrides) into .stack/sql/<script>, the file sql-client.sh runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from marketpulse.config import Settings
from marketpulse.sqltemplate import PLACEHOLDER, TemplateError, compose, sql_variables
from marketpulse.sqltemplate import render as render_text
from stack import flink, paths, sqlgateway
from stack.errors import StackError
from stack.log import say

__all__ = ["PLACEHOLDER", "render", "run_sql_script", "sql_variables"]
RENDERED_DIR = paths.STACK_DIR / "sql"


def render(script: Path, settings: Settings, variables: dict[str, str] | None = None,
           savepoint: str | None = None) -> Path:
    """Resolves the script's includes and fills its ${placeholders} into .stack/sql/<name>; returns that
    file. With a savepoint (or retained checkpoint) path, the script's jobs start from it: a SET ahead of
    every statement."""
    try:
        text = render_text(compose(script), sql_variables(settings) | (variables or {}))
    except TemplateError as err:
        raise StackError(f"{script}: {err}") from None
    if savepoint:
        text = f"SET 'execution.savepoint.path' = '{savepoint}';\n" + text
    RENDERED_DIR.mkdir(parents=True, exist_ok=True)
    rendered = RENDERED_DIR / script.name
    rendered.touch(mode=0o600)
    rendered.chmod(0o600)  # it holds the writer role's password (its sinks' options)
    rendered.write_text(text)
    return rendered


def run_sql_script(settings: Settings, script: str, extra: list[str] | None = None,
                   variables: dict[str, str] | None = None, capture: bool = False,
                   savepoint: str | None = None, gateway: bool = False):
    """sql-client.sh -f on the rendered script; with gateway=True, the same statements through the
    stack's SQL Gateway instead (no JVM start; prints "Job ID: <id>" per job as sql-client does)."""
    path = Path(script)
    if not path.exists():
        raise StackError(f"SQL script not found: {script}")
    if not flink.healthy(settings):
        raise StackError(f"Flink cluster is not up at {settings.flink.rest_url}: run `make up` first")
    rendered = render(path, settings, variables, savepoint)
    if gateway:
        say(f"SQL Gateway {settings.flink.sql_gateway_url}: {paths.shown(rendered)} "
            f"(from {script})")
        try:
            sqlgateway.submit(settings, rendered.read_text())
        except StackError as err:
            print(err)
            return 1
        return 0
    say(f"sql-client.sh -f {paths.shown(rendered)} (from {script})")
    cmd = [flink.bin_path("sql-client.sh"), "-f", str(rendered), *(extra or [])]
    result = subprocess.run(cmd, env=flink.flink_env(), capture_output=capture, text=True)
    if capture:
        return result
    return result.returncode


def precompile_plans(settings: Settings, scripts: list[str]) -> None:
    """Compiles the plans of these scripts that have none yet (make setup, make demo), so that even the
    first submission through the gateway runs from a plan (stack/sqlgateway.py). sql-client.sh in embedded
    mode: COMPILE PLAN only plans, no cluster needed; one JVM, ~30 s, once per change of the SQL or its
    settings. A failure is reported and left to the gateway, which then compiles at the first submission."""
    flink.prepare(settings)
    plans = []
    for script in scripts:
        path = paths.REPO / script
        statements = sqlgateway.statements(render(path, settings).read_text())
        plan = sqlgateway.plan_file(settings, statements)
        if plan is None:
            continue
        plans.append(plan)
        sqlgateway.pin(plan.parent, plans)
        if plan.exists():
            continue
        say(f"compiling the plan of {script} for the SQL Gateway (sql-client.sh, once; ~30 s)")
        sqlgateway.private_dir(plan.parent)
        partial = plan.with_suffix(".compiling")
        partial.unlink(missing_ok=True)
        compile_script = RENDERED_DIR / f"{path.stem}.compile.sql"
        compile_script.write_text(";\n\n".join(sqlgateway.compile_statements(statements, partial)) + ";\n")
        result = subprocess.run([flink.bin_path("sql-client.sh"), "-f", str(compile_script)],
                                env=flink.flink_env(), capture_output=True, text=True)
        if result.returncode != 0 or "[ERROR]" in result.stdout or not partial.exists():
            log = flink.LOG_DIR / f"compile-{path.stem}.log"
            log.write_text(result.stdout + result.stderr)
            say(f"compiling {script} failed (the gateway will plan it at submission); see {log}")
            continue
        partial.rename(plan)
        sqlgateway.prune(plan.parent, sqlgateway.PLANS_KEPT)
