"""Least privilege on the real PostgreSQL (conf/pipeline.toml [postgres], db/grants.sql): the dashboard's
reader role can only read; the writer of the Flink jobs and services can upsert rows but create, drop or
delete nothing; a hostile password (spaces, both quotes, a backslash, `;--`, `%`) round-trips through every
place that passes one on: CREATE ROLE, a libpq connection string, the dashboard's pool and Flink's JDBC sink
DDL (a SQL script through sql-client.sh and a PyFlink job through `flink run`)."""

from __future__ import annotations

import copy
import uuid
from contextlib import closing
from datetime import UTC, datetime

import psycopg2
import pytest
from psycopg2 import errors

from dashboard.db import Database
from marketpulse.config import postgres_connect_args, postgres_dsn, postgres_user
from stack import postgres as stack_postgres
from stack.errors import StackError
from tests import support
from tests.integration.test_stack import (
    PROBE_JOB,
    PROBE_SQL,
    create_probe_table,
    fill_probe_topic,
    probe_trades,
)

pytestmark = pytest.mark.integration

HOSTILE = "p a'ss\"w\\rd;--%"
READ_PROBE = "SELECT trade_id, symbol, price, size FROM {table} ORDER BY trade_id"
T0 = datetime(2025, 6, 2, 13, 30, tzinfo=UTC)
# A window row as the JDBC sink writes it: INSERT ... ON CONFLICT DO UPDATE.
UPSERT_WINDOW = (
    "INSERT INTO window_metrics (engine, symbol, window_seconds, window_start, window_end, open, high, low, "
    "close, vwap, volume, notional, trade_count, buy_count, sell_count, min_price, max_price, avg_price, "
    "stddev_price) VALUES ('datastream', 'AAPL', 60, %(start)s, %(start)s + interval '1 minute', 1, 2, 0.5, "
    "%(close)s, 1, 10, 10, 3, 2, 1, 0.5, 2, 1, 0.5) "
    "ON CONFLICT (engine, symbol, window_seconds, window_start) DO UPDATE SET close = EXCLUDED.close")


def connect(settings, role: str):
    conn = psycopg2.connect(**postgres_connect_args(settings, role), connect_timeout=5)
    conn.autocommit = True
    return conn


def refused(cur, statement: str, params=None) -> str:
    """The statement fails for want of a privilege; returns PostgreSQL's message (first line)."""
    with pytest.raises(errors.InsufficientPrivilege) as caught:
        cur.execute(statement, params)
    return str(caught.value).splitlines()[0]


def test_the_reader_can_read_everything_and_change_nothing(scratch_db):
    with closing(connect(scratch_db, "owner")) as conn, conn.cursor() as cur:
        cur.execute(UPSERT_WINDOW, {"start": T0, "close": 100.0})
    with closing(connect(scratch_db, "reader")) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user, symbol, close FROM window_metrics")
        assert cur.fetchall() == [(postgres_user(scratch_db, "reader"), "AAPL", 100.0)]
        assert refused(cur, UPSERT_WINDOW, {"start": T0, "close": 1.0}) == \
            "permission denied for table window_metrics"
        assert refused(cur, "UPDATE window_metrics SET close = 0") == \
            "permission denied for table window_metrics"
        assert refused(cur, "DELETE FROM anomalies") == "permission denied for table anomalies"
        assert refused(cur, "TRUNCATE symbols") == "permission denied for table symbols"
        assert refused(cur, "CREATE TABLE x (a INT)") == "permission denied for schema public"
        assert refused(cur, "CREATE TEMP TABLE x (a INT)") == \
            f'permission denied to create temporary tables in database "{scratch_db.postgres.database}"'
        cur.execute("SELECT close FROM window_metrics")  # the refusals left the session usable
        assert cur.fetchall() == [(100.0,)]


def test_the_writer_upserts_rows_but_creates_drops_and_deletes_nothing(scratch_db):
    with closing(connect(scratch_db, "writer")) as conn, conn.cursor() as cur:
        # What the JDBC sinks do: INSERT ... ON CONFLICT DO UPDATE (and the hourly roll-up's trigger with it).
        cur.execute(UPSERT_WINDOW, {"start": T0, "close": 100.0})
        cur.execute(UPSERT_WINDOW, {"start": T0, "close": 101.5})
        cur.execute("INSERT INTO anomalies (trade_id, rule, symbol, event_time, price, size, detected_at, "
                    "engine) VALUES ('t1', 'price_jump', 'AAPL', %s, 1, 1, %s, 'sql') "
                    "ON CONFLICT (engine, trade_id, rule) DO UPDATE SET price = EXCLUDED.price", (T0, T0))
        cur.execute("SELECT close FROM window_metrics")
        assert cur.fetchall() == [(101.5,)]
        assert refused(cur, "CREATE TABLE x (a INT)") == "permission denied for schema public"
        assert refused(cur, "CREATE TEMP TABLE x (a INT)") == \
            f'permission denied to create temporary tables in database "{scratch_db.postgres.database}"'
        assert refused(cur, "DROP TABLE window_metrics") == "must be owner of table window_metrics"
        assert refused(cur, "ALTER TABLE anomalies ADD COLUMN x INT") == "must be owner of table anomalies"
        assert refused(cur, "CREATE INDEX ON anomalies (price)") == "must be owner of table anomalies"
        assert refused(cur, "DELETE FROM window_metrics") == "permission denied for table window_metrics"
        assert refused(cur, "TRUNCATE anomalies") == "permission denied for table anomalies"
        assert refused(cur, "INSERT INTO schema_migrations (version) VALUES ('999_x.sql')") == \
            "permission denied for table schema_migrations"
    with closing(connect(scratch_db, "owner")) as conn, conn.cursor() as cur:
        cur.execute("SELECT windows, close_sum FROM window_metrics_hourly")
        assert cur.fetchall() == [(1, 101.5)]  # the trigger ran with the writer's rights: the old row out


def test_tables_the_owner_adds_later_get_the_same_grants(scratch_db):
    with closing(connect(scratch_db, "owner")) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE later_table (k INT PRIMARY KEY, v TEXT)")
    with closing(connect(scratch_db, "writer")) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO later_table VALUES (1, 'a') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v")
    with closing(connect(scratch_db, "reader")) as conn, conn.cursor() as cur:
        cur.execute("SELECT k, v FROM later_table")
        assert cur.fetchall() == [(1, "a")]
        assert refused(cur, "INSERT INTO later_table VALUES (2, 'b')") == \
            "permission denied for table later_table"


def test_make_up_again_changes_nothing_and_keeps_the_grants(stack):
    """provision() on the running stack (what every `make up` does) is idempotent."""
    stack_postgres.provision(stack)
    stack_postgres.provision(stack)
    with closing(connect(stack, "reader")) as conn, conn.cursor() as cur:
        cur.execute("SELECT has_table_privilege('window_metrics', 'INSERT'), "
                    "has_table_privilege('window_metrics', 'SELECT')")
        assert cur.fetchone() == (False, True)
    with closing(connect(stack, "writer")) as conn, conn.cursor() as cur:
        cur.execute("SELECT has_schema_privilege('public', 'CREATE'), "
                    "has_table_privilege('anomalies', 'UPDATE'), has_table_privilege('anomalies', 'DELETE')")
        assert cur.fetchone() == (False, True, False)
    secrets = stack_postgres.stack_secret_file("owner").parent
    assert {path.name: path.stat().st_mode & 0o777 for path in secrets.iterdir()} == {
        f"postgres-{role}.password": 0o600 for role in ("owner", "writer", "reader")}


def test_init_on_a_server_it_did_not_start_checks_the_roles_an_owner_may_not_create(stack):
    """`python -m stack init` (docker-compose, Kubernetes) as an owner that is no superuser, as here."""
    stack_postgres.ensure_service_roles(stack)  # both roles exist: nothing to do
    missing = copy.deepcopy(stack)
    missing.postgres.reader_user = "mp_no_such_reader"
    with pytest.raises(StackError, match=r"^PostgreSQL role\(s\) mp_no_such_reader missing, and marketpulse "
                       "may not create roles"):
        stack_postgres.ensure_service_roles(missing)


@pytest.fixture
def hostile_roles(stack):
    """A scratch database whose writer and reader are new roles with the hostile password, made the way
    `make up` makes the stack's (stack/postgres.py: role_statements, db/grants.sql); dropped afterwards."""
    suffix = uuid.uuid4().hex[:6]
    scratch = support.create_scratch_database(stack)
    hostile = copy.deepcopy(scratch)
    hostile.postgres.writer_user = f"mp test writer {suffix}"  # a name that needs quoting, too
    hostile.postgres.reader_user = f"mp_test_reader_{suffix}"
    hostile.postgres.writer_password = HOSTILE
    hostile.postgres.reader_password = HOSTILE
    admin = stack_postgres._superuser_connect(stack)
    try:
        with admin.cursor() as cur:
            stack_postgres.sync_roles(cur, hostile, ("writer", "reader"))
        stack_postgres.apply_schema(hostile)  # grants to the new roles in the scratch database
        yield hostile
    finally:
        support.drop_scratch_database(stack, scratch)
        with admin.cursor() as cur:
            for role in ("writer", "reader"):
                cur.execute(f'DROP ROLE IF EXISTS "{postgres_user(hostile, role)}"')
        admin.close()


def test_a_hostile_password_round_trips(hostile_roles, kafka_topic):
    settings = hostile_roles
    # libpq's connection string (what the services and the dashboard use) and keyword arguments.
    with closing(psycopg2.connect(postgres_dsn(settings, "writer"), connect_timeout=5)) as conn, \
            conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone() == (postgres_user(settings, "writer"),)
    database = Database(postgres_dsn(settings, "reader"))
    assert database.frame("SELECT current_user AS who")["who"].tolist() == [postgres_user(settings, "reader")]
    database.close()
    wrong = copy.deepcopy(settings)
    wrong.postgres.reader_password = HOSTILE[:-1]
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(postgres_dsn(wrong, "reader"), connect_timeout=5)

    # Flink's JDBC sink with the password in its DDL: a SQL script through sql-client.sh ...
    from stack.sql import run_sql_script

    topic = kafka_topic("probe_hostile", partitions=1)
    trades = probe_trades("hostile", 12)
    fill_probe_topic(settings, topic, trades)
    expected = sorted((t.trade_id, t.symbol, t.price, t.size) for t in trades)
    table = create_probe_table(settings)
    result = run_sql_script(settings, PROBE_SQL, variables={"topic": topic, "table": table}, capture=True)
    assert result.returncode == 0 and "[ERROR]" not in result.stdout, \
        result.stdout[-3000:] + result.stderr[-2000:]
    assert support.query(settings, READ_PROBE.format(table=table)) == expected

    # ... and a PyFlink job that renders its own sink DDL (flink run: the password is in the environment).
    table = create_probe_table(settings)
    env = support.env_for(settings, postgres_writer_user=settings.postgres.writer_user,
                          postgres_writer_password=HOSTILE)
    result = support.flink_run("-py", PROBE_JOB, "--topic", topic, "--table", table, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
    assert support.query(settings, READ_PROBE.format(table=table)) == expected
