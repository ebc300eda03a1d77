"""stack/sqlgateway.py without a gateway: how a rendered script is cut into the statements the gateway
takes, how a failed statement's error is reduced to its cause, and which compiled plan a script runs from."""

import io
import json
import os
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import pytest

from stack import sqlgateway
from stack.errors import StackError


def test_a_statement_set_stays_one_statement_and_comments_go():
    script = ("-- Job name.\nSET 'pipeline.name' = 'x; y';\n\nCREATE TABLE t (a INT);\n"
              "-- Both inserts, one job.\nEXECUTE STATEMENT SET\nBEGIN\n    -- first\n"
              "    INSERT INTO t SELECT 1;\n    INSERT INTO t SELECT 2;\nEND;\n")
    assert sqlgateway.statements(script) == [
        "SET 'pipeline.name' = 'x; y'",
        "CREATE TABLE t (a INT)",
        "EXECUTE STATEMENT SET\nBEGIN\n    \n    INSERT INTO t SELECT 1;\nINSERT INTO t SELECT 2;\nEND",
    ]


def test_a_statement_set_without_end_is_an_error():
    with pytest.raises(StackError, match="without END"):
        sqlgateway.statements("EXECUTE STATEMENT SET\nBEGIN\nINSERT INTO t SELECT 1;\n")


def test_the_error_is_the_last_cause_not_the_stack_trace():
    trace = ("<Exception on server side:\n"
             "org.apache.flink.table.gateway.api.utils.SqlGatewayException: Failed to fetchResults.\n"
             "\tat org.apache.flink...\n"
             "Caused by: org.apache.flink.table.api.ValidationException: SQL validation failed.\n"
             "Caused by: org.apache.calcite.sql.validate.SqlValidatorException: Object 'nope' not found\n"
             "\tat org.apache.calcite...")
    body = {"errors": ["Internal server error.", trace]}
    err = urllib.error.HTTPError("http://x", 500, "err", {}, io.BytesIO(json.dumps(body).encode()))
    assert sqlgateway._error_text(err) == \
        "org.apache.calcite.sql.validate.SqlValidatorException: Object 'nope' not found"


SCRIPT = ["SET 'pipeline.name' = 'p'", "CREATE TABLE t (a INT)",
          "EXECUTE STATEMENT SET\nBEGIN\nINSERT INTO t SELECT 1;\nEND"]


def cache(on: bool):
    return SimpleNamespace(flink=SimpleNamespace(sql_plan_cache=on))


def test_a_plan_is_keyed_by_the_statements_but_not_by_the_savepoint_to_start_from():
    same = sqlgateway.plan_key(["SET 'execution.savepoint.path' = '/sp/1'"] + SCRIPT)
    assert same == sqlgateway.plan_key(SCRIPT)
    assert sqlgateway.plan_key(SCRIPT) != sqlgateway.plan_key(SCRIPT[:1] + ["CREATE TABLE t (a BIGINT)"]
                                                              + SCRIPT[2:])
    with_setting = ["SET 'table.local-time-zone' = 'UTC'"] + SCRIPT
    assert sqlgateway.plan_key(SCRIPT) != sqlgateway.plan_key(with_setting)


def test_only_a_script_ending_in_its_one_job_statement_runs_from_a_plan():
    assert sqlgateway.plan_file(cache(True), SCRIPT) == \
        sqlgateway.PLAN_DIR / f"{sqlgateway.plan_key(SCRIPT)}.json"
    assert sqlgateway.plan_file(cache(False), SCRIPT) is None
    two_jobs = SCRIPT + ["INSERT INTO t SELECT 2"]
    assert sqlgateway.plan_file(cache(True), two_jobs) is None
    assert sqlgateway.plan_file(cache(True), SCRIPT[:2]) is None


def test_the_job_statement_is_compiled_in_place():
    target = Path("/plans/x.compiling")
    assert sqlgateway.compile_statements(SCRIPT, target) == SCRIPT[:2] + [
        "COMPILE PLAN '/plans/x.compiling' FOR STATEMENT SET\nBEGIN\nINSERT INTO t SELECT 1;\nEND"]
    assert sqlgateway.compile_statements(SCRIPT[:2] + ["INSERT INTO t SELECT 1"], target)[-1] == \
        "COMPILE PLAN '/plans/x.compiling' FOR INSERT INTO t SELECT 1"


def test_prune_keeps_the_newest_plans(tmp_path):
    for age, name in enumerate(["new", "mid", "old"]):
        plan = tmp_path / f"{name}.json"
        plan.write_text("{}")
        os.utime(plan, (1000 - age, 1000 - age))
    sqlgateway.prune(tmp_path, 2)
    assert sorted(path.stem for path in tmp_path.glob("*.json")) == ["mid", "new"]


def test_prune_never_deletes_the_pinned_plans_of_the_configured_jobs(tmp_path):
    for age, name in enumerate(["new", "mid", "demo", "old"]):
        plan = tmp_path / f"{name}.json"
        plan.write_text("{}")
        os.utime(plan, (1000 - age, 1000 - age))
    sqlgateway.pin(tmp_path, [tmp_path / "demo.json"])
    sqlgateway.prune(tmp_path, 1)
    assert sorted(path.stem for path in tmp_path.glob("*.json")) == ["demo", "new"]
