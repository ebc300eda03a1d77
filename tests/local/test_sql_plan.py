"""The SQL pipeline's execution plan (sql/pipeline.sql as the stack renders it, EXPLAINed on a local
TableEnvironment with the connector jars of .deps): the JSON parsing and the validity rule of
sql/include/trades.sql run once per record, in one operator whose output every result reads. Without
'table.optimizer.reuse-optimize-block-with-digest-enabled' each of the 7 results merged the views into its
own Calc and parsed every record again (bench/README.md, "The SQL job's shared views": 2.5-2.9 times the
drain rate)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("pyflink")

from pyflink.table import EnvironmentSettings, TableEnvironment  # noqa: E402

from jobs.sql_pipeline import parse_set  # noqa: E402
from marketpulse.config import load_settings  # noqa: E402
from marketpulse.sqltemplate import compose, render, sql_variables  # noqa: E402
from stack import paths  # noqa: E402
from stack.sqlgateway import is_set, statements  # noqa: E402
from tests.support import local_flink_jars  # noqa: E402

pytestmark = pytest.mark.flink_local

PIPELINE = paths.REPO / "sql" / "pipeline.sql"


def execution_plan() -> str:
    """The script run as jobs/sql_pipeline.py runs it, its statement set EXPLAINed instead of executed."""
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("pipeline.jars", ";".join(local_flink_jars()))  # kafka, jdbc, marketpulse-jdbc
    plan = None
    for statement in statements(render(compose(PIPELINE), sql_variables(load_settings(environ={})))):
        if is_set(statement):
            t_env.get_config().set(*parse_set(statement))
        elif statement.upper().startswith("EXECUTE STATEMENT SET"):
            with t_env.execute_sql("EXPLAIN" + statement[len("EXECUTE"):]).collect() as rows:
                plan = "".join(row[0] for row in rows)
        else:
            t_env.execute_sql(statement)
    assert plan is not None, "sql/pipeline.sql has no statement set"
    return plan.split("== Optimized Execution Plan ==")[1]


def test_the_trades_views_are_one_operator_that_every_result_reads():
    plan = execution_plan()
    parsing = [line for line in plan.splitlines() if re.match(r"[\s:+-]*Calc\(.*JSON_QUERY", line)]
    sinks = re.findall(r"^\s*Sink\(table=", plan, re.M)
    print(f"\n{len(sinks)} sinks; operators that parse the JSON: {len(parsing)} (7 before the views were "
          "shared)")
    assert len(sinks) >= 7
    assert len(parsing) == 1, [line[:120] for line in parsing]
    assert "(reuse_id=" in parsing[0]
