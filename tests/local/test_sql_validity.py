"""The SQL scripts' validity rule (sql/window_metrics.sql with sql/include/trades.sql: the f_* columns of
the source, the views checked_trades, valid_trades and rejected_records, taken from the script as the stack
renders it, with ${trade_is_valid} of sql/include/trade_is_valid.sql) against marketpulse.trade.parse_trade,
on a local Flink: the hostile corpus (every class and mutation-fuzzed trades) and valid trades in other JSON
spellings. Both engines must call the same records valid and read the same values from them."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

pytest.importorskip("pyflink")

from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment  # noqa: E402

from generator import hostile  # noqa: E402
from marketpulse.config import load_settings  # noqa: E402
from marketpulse.sqltemplate import compose, render, sql_variables  # noqa: E402
from marketpulse.trade import InvalidTrade, heartbeat_time, heartbeat_value, parse_trade  # noqa: E402

pytestmark = pytest.mark.flink_local

SCRIPT = Path(__file__).resolve().parents[2] / "sql" / "window_metrics.sql"


def script_parts() -> tuple[list[str], list[str]]:
    text = render(compose(SCRIPT), sql_variables(load_settings(environ={})))
    columns = re.findall(r"^\s+(f_\w+\s+AS .*),$", text, re.M)
    views = [re.search(rf"CREATE TEMPORARY VIEW {name} AS\n.*?;\n", text, re.S).group(0).rstrip().rstrip(";")
             for name in ("checked_trades", "valid_trades", "rejected_records")]
    return columns, views


def run(values: list[bytes | None]) -> tuple[dict[int, tuple], dict[int, str]]:
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("parallelism.default", "1")
    rows = [(index, None if value is None else bytearray(value)) for index, value in enumerate(values)]
    source = t_env.from_elements(rows, DataTypes.ROW([DataTypes.FIELD("idx", DataTypes.INT()),
                                                      DataTypes.FIELD("value", DataTypes.BYTES())]))
    t_env.create_temporary_view("raw_input", source)
    columns, views = script_parts()
    # The script's source table, minus Kafka: the same f_* columns over the same bytes (ts is not under test).
    fields = ", ".join(re.sub(r"^(f_\w+)\s+AS (.*)$", r"\2 AS \1", column) for column in columns)
    t_env.execute_sql("CREATE TEMPORARY VIEW trades AS SELECT `value`, 0 AS `partition`, CAST(idx AS BIGINT) "
                      f"AS `offset`, {fields}, TO_TIMESTAMP_LTZ(0, 3) AS ts FROM raw_input")
    for view in views:
        t_env.execute_sql(view)
    valid = {}
    # valid_trades has no offset: the same projection with the offset kept.
    valid_sql = views[1].replace("CREATE TEMPORARY VIEW valid_trades AS\nSELECT ",
                                 "SELECT CAST(`offset` AS INT) AS idx, ").replace(", ts\nFROM", "\nFROM")
    with t_env.execute_sql(valid_sql).collect() as results:
        for row in results:
            valid[row[0]] = tuple(row[1:7])
    rejected = {}
    with t_env.execute_sql("SELECT CAST(`offset` AS INT), reason FROM rejected_records").collect() as results:
        for row in results:
            rejected[row[0]] = row[1]
    return valid, rejected


def python_verdict(value):
    try:
        trade = parse_trade(value)
    except InvalidTrade:
        return None
    return (trade.trade_id, trade.symbol, trade.price, trade.size, trade.side, trade.event_time)


def test_sql_and_python_agree_on_every_record():
    rng = random.Random(11)
    records = hostile.corpus(1500, seed=11)
    values = [record.value for record in records]
    classes = [record.klass for record in records]
    for index in range(500):  # valid trades, written in other JSON spellings too
        trade = hostile.valid_trade(rng, index)
        text = hostile.dumps(trade)
        if index % 5 == 1:
            text = text.replace(b",", b" , ").replace(b":", b" : ")
        elif index % 5 == 2:
            text = hostile.dumps(dict(reversed(list(trade.items()))))
        elif index % 5 == 3:
            text = text.replace(b'"AAPL"', b'"\\u0041APL"').replace(b"/", b"\\/")
        values.append(text)
        classes.append("valid")
    # Heartbeats are neither trades nor dead letters; anything merely like one is a dead letter.
    values += [heartbeat_value(0), heartbeat_value(1_735_828_200_000), heartbeat_value(253_402_214_399_999),
               b'{"heartbeat":253402214400000}', b'{"heartbeat": 5}', b'{"heartbeat":05}',
               b'{"heartbeat":5}\n', b'{"heartbeat":"5"}', b'{"heartbeat":5,"x":1}', b'{"heartbeat":-5}',
               b'{"Heartbeat":5}']
    classes += ["heartbeat"] * 11
    heartbeats = {index for index, value in enumerate(values) if heartbeat_time(value) is not None}
    assert len(heartbeats) == 3
    valid, rejected = run(values)
    assert set(valid).isdisjoint(rejected)
    assert set(valid) | set(rejected) == set(range(len(values))) - heartbeats
    mismatches = []
    for index, value in enumerate(values):
        expected = python_verdict(value)
        actual = valid.get(index)
        if expected != actual:
            mismatches.append((classes[index], value[:200] if value else value, expected, actual,
                               rejected.get(index)))
    assert not mismatches, f"{len(mismatches)} records judged differently, e.g. {mismatches[:5]}"
    assert sum(classes[i] == "valid" for i in valid) == 500
