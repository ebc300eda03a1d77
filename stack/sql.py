"""Runs a Flink SQL script with `sql-client.sh -f` against the session cluster.

Scripts in sql/ name connection settings as ${placeholders} (e.g. ${kafka_bootstrap_servers},
${postgres_jdbc_url}), never literal hosts. They are filled from conf/pipeline.toml (+ environment
overrides) into .stack/sql/<script> and that file is what sql-client.sh runs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from marketpulse.config import Settings, postgres_jdbc_url
from stack import flink, paths
from stack.errors import StackError
from stack.log import say

PLACEHOLDER = re.compile(r"\$\{([a-z0-9_]+)\}")
RENDERED_DIR = paths.STACK_DIR / "sql"


def sql_variables(settings: Settings) -> dict[str, str]:
    values = {key: str(value) for key, value in settings.flat().items() if not isinstance(value, list)}
    values["postgres_jdbc_url"] = postgres_jdbc_url(settings)
    values["window_size_ms"] = str(settings.windows.size_seconds * 1000)
    values["max_out_of_orderness_seconds"] = f"{settings.windows.max_out_of_orderness_ms / 1000:g}"
    return values


def render(script: Path, settings: Settings, variables: dict[str, str] | None = None) -> Path:
    values = sql_variables(settings) | (variables or {})
    text = script.read_text()
    unknown = sorted({name for name in PLACEHOLDER.findall(text) if name not in values})
    if unknown:
        raise StackError(f"{script}: unknown placeholder(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(values))}")
    RENDERED_DIR.mkdir(parents=True, exist_ok=True)
    rendered = RENDERED_DIR / script.name
    rendered.write_text(PLACEHOLDER.sub(lambda m: values[m.group(1)], text))
    return rendered


def run_sql_script(settings: Settings, script: str, extra: list[str] | None = None,
                   variables: dict[str, str] | None = None, capture: bool = False):
    path = Path(script)
    if not path.exists():
        raise StackError(f"SQL script not found: {script}")
    if not flink.healthy(settings):
        raise StackError(f"Flink cluster is not up at {settings.flink.rest_url}: run `make up` first")
    rendered = render(path, settings, variables)
    say(f"sql-client.sh -f {rendered.relative_to(paths.REPO)} (from {script})")
    cmd = [flink.bin_path("sql-client.sh"), "-f", str(rendered), *(extra or [])]
    result = subprocess.run(cmd, env=flink.flink_env(), capture_output=capture, text=True)
    if capture:
        return result
    return result.returncode
