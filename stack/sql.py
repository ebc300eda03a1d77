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
    # The stack folder may be outside the repo (MARKETPULSE_STACK_DIR): then the path is shown whole.
    shown = rendered.relative_to(paths.REPO) if rendered.is_relative_to(paths.REPO) else rendered
    if gateway:
        say(f"SQL Gateway {settings.flink.sql_gateway_url}: {shown} "
            f"(from {script})")
        try:
            sqlgateway.submit(settings, rendered.read_text())
        except StackError as err:
            print(err)
            return 1
        return 0
    say(f"sql-client.sh -f {shown} (from {script})")
    cmd = [flink.bin_path("sql-client.sh"), "-f", str(rendered), *(extra or [])]
    result = subprocess.run(cmd, env=flink.flink_env(), capture_output=capture, text=True)
    if capture:
        return result
    return result.returncode
