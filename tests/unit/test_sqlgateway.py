"""stack/sqlgateway.py without a gateway: how a rendered script is cut into the statements the gateway
takes, and how a failed statement's error is reduced to its cause."""

import io
import json
import urllib.error

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
