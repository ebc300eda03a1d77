"""A Flink SQL script (conf/pipeline.toml jobs.sql_scripts, sql/pipeline.sql) as a PyFlink program, for
Flink's application mode: the Flink Kubernetes Operator runs it with PythonDriver in the JobManager of its own
FlinkDeployment (deploy/k8s/base/flink-sql.yaml), where there is no SQL Gateway to submit it to.

    python -m stack flink run -py jobs/sql_pipeline.py [--script sql/pipeline.sql]

The script is rendered from the settings by the code `make sql` and the gateway use
(marketpulse/sqltemplate.py: compose, then render with sql_variables) and cut into the gateway's statements
(stack/sqlgateway.py, statements: a statement set whole); SET statements go into the table configuration,
every other statement is executed in order, and the program waits on the job the statement set starts, as
env.execute() does for the DataStream job. Its settings come from the JobManager's environment
(MARKETPULSE_*, MARKETPULSE_CONFIG)."""

from __future__ import annotations

import argparse
import re

from pyflink.table import EnvironmentSettings, TableEnvironment

from marketpulse.config import load_settings
from marketpulse.sqltemplate import compose, render, sql_variables
from stack import paths
from stack.sqlgateway import is_job_statement, is_set, statements

SET = re.compile(r"^SET\s+'([^']+)'\s*=\s*'((?:[^']|'')*)'$", re.IGNORECASE | re.DOTALL)


def parse_set(statement: str) -> tuple[str, str]:
    match = SET.match(statement.strip())
    if not match:
        raise ValueError(f"not a SET 'key' = 'value' statement: {statement[:80]}")
    return match.group(1), match.group(2).replace("''", "'")


def main(argv: list[str] | None = None) -> None:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="sql_pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--script", default=settings.jobs.sql_scripts[0],
                        help="SQL script, relative to the repository (default: jobs.sql_scripts' first)")
    args = parser.parse_args(argv)
    script = paths.REPO / args.script
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    result = None
    for statement in statements(render(compose(script), sql_variables(settings))):
        if is_set(statement):
            t_env.get_config().set(*parse_set(statement))
        else:
            outcome = t_env.execute_sql(statement)
            if is_job_statement(statement):
                result = outcome
    print(f"sql_pipeline: {args.script} submitted", flush=True)
    if result is not None:
        result.wait()


if __name__ == "__main__":
    main()
