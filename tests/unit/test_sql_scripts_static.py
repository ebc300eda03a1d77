"""The Flink SQL scripts (sql/*.sql) follow the house layout, use only known placeholders, and declare sinks
that match the Postgres tables (columns and primary keys). No cluster needed."""

import re
from pathlib import Path

import pytest

from marketpulse.config import load_settings
from stack.sql import PLACEHOLDER, sql_variables

REPO = Path(__file__).resolve().parents[2]
SETTINGS = load_settings(environ={})
SCRIPTS = sorted((REPO / "sql").glob("*.sql"))
SCHEMA = "\n".join(path.read_text() for path in sorted((REPO / "db" / "schema").glob("*.sql")))
# The view chain every script shares, so all of them count exactly the same trades as on time.
SHARED_VIEWS = ("checked_trades", "valid_trades", "classified_trades", "on_time_trades")


def statements(text: str) -> list[tuple[str, str]]:
    """(leading comment, statement) pairs; EXECUTE STATEMENT SET ... END; is one statement."""
    found, comment, current = [], [], []
    in_set = False
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (stripped.startswith("--") or not stripped):
            comment = comment + [stripped] if stripped else []
            continue
        current.append(line)
        in_set = in_set or stripped.upper().startswith("EXECUTE STATEMENT SET")
        if (in_set and stripped.upper() == "END;") or (not in_set and stripped.endswith(";")):
            found.append(("\n".join(comment), "\n".join(current)))
            comment, current, in_set = [], [], False
    assert not current, f"unterminated statement: {current[:3]}"
    return found


def kind(statement: str) -> str:
    head = " ".join(statement.split()[:3]).upper()
    for prefix in ("SET", "CREATE TABLE", "CREATE TEMPORARY VIEW", "EXECUTE STATEMENT SET"):
        if head.startswith(prefix):
            return prefix
    raise AssertionError(f"unexpected statement: {statement[:80]}")


def tables(text: str) -> dict[str, tuple[str, list[str], list[str]]]:
    """name -> (connector, column names, primary key) of each CREATE TABLE."""
    result = {}
    for name, body, options in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\) WITH \((.*?)\n\);", text, re.S):
        columns = [line.split()[0].strip("`") for line in body.strip().splitlines()
                   if line.strip() and not line.strip().startswith(("PRIMARY KEY", "WATERMARK", "-"))
                   and " AS " not in line]
        key = re.search(r"PRIMARY KEY \(([^)]*)\)", body)
        connector = re.search(r"'connector' = '([^']+)'", options).group(1)
        result[name] = (connector, columns, [c.strip(" `") for c in key.group(1).split(",")] if key else [])
    return result


def postgres_table(name: str) -> tuple[list[str], list[str]]:
    """Columns a sink writes and primary key of a table after every migration (CREATE TABLE, then ALTER
    TABLE ... ADD COLUMN / ADD PRIMARY KEY in later files)."""
    body = re.search(rf"CREATE TABLE {name} \((.*?)\n\);", SCHEMA, re.S).group(1)
    lines = [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("--")]
    columns = [line.split()[0] for line in lines if not line.startswith("PRIMARY KEY")]
    key = re.search(r"PRIMARY KEY \(([^)]*)\)", body).group(1)
    for alter in re.findall(rf"ALTER TABLE {name}\b(.*?);", SCHEMA, re.S):
        # A column the server stamps on INSERT (DEFAULT clock_timestamp(), e.g. landed_at) is no sink's.
        columns += [column for column, definition in re.findall(r"ADD COLUMN (\w+)([^,;]*)", alter)
                    if "clock_timestamp()" not in definition]
        key = next(iter(re.findall(r"ADD PRIMARY KEY \(([^)]*)\)", alter)), key)
    return columns, [c.strip() for c in key.split(",")]


def test_the_scripts_the_config_lists_exist():
    assert SCRIPTS
    assert {REPO / script for script in SETTINGS.jobs.sql_scripts} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_house_order_and_a_comment_over_every_statement(script):
    found = statements(script.read_text())
    kinds = [kind(statement) for _comment, statement in found]
    order = ["SET", "CREATE TABLE", "CREATE TEMPORARY VIEW", "EXECUTE STATEMENT SET"]
    assert kinds == sorted(kinds, key=order.index), kinds
    assert kinds.count("EXECUTE STATEMENT SET") == 1 and kinds[-1] == "EXECUTE STATEMENT SET"
    for comment, statement in found:
        assert comment.startswith("--"), f"no comment over: {statement[:80]}"
    body = found[-1][1]
    inserts = body.count("INSERT INTO")
    assert inserts >= 1 and len(re.findall(r"^\s*-- ", body, re.M)) >= inserts  # a comment over each INSERT
    # The Kafka sources (the trades topic first), then the JDBC sinks.
    connectors = [connector for connector, _columns, _key in tables(script.read_text()).values()]
    sources = connectors.index("marketpulse-jdbc")
    assert connectors[0] == "kafka" and set(connectors[:sources]) == {"kafka"}
    assert set(connectors[sources:]) == {"marketpulse-jdbc"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_only_known_placeholders_and_no_literal_endpoints(script):
    text = script.read_text()
    assert set(PLACEHOLDER.findall(text)) <= set(sql_variables(SETTINGS))
    for literal in ("127.0.0.1", "localhost", ":9092", ":5432", "jdbc:postgresql:", "marketpulse'"):
        assert literal not in text, literal
    names = re.findall(r"SET 'pipeline.name' = '([^']+)';", text)
    assert len(names) == 1 and names[0].startswith("marketpulse-sql-")


def test_job_names_are_unique():
    names = [re.search(r"SET 'pipeline.name' = '([^']+)';", path.read_text()).group(1) for path in SCRIPTS]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_sinks_match_the_postgres_tables(script):
    for name, (connector, columns, key) in tables(script.read_text()).items():
        if connector != "marketpulse-jdbc":
            continue
        assert re.search(rf"'table-name' = '{name}'", script.read_text())
        pg_columns, pg_key = postgres_table(name)
        assert columns == pg_columns, name
        assert key == pg_key, name


def test_every_script_shares_the_source_and_the_late_rule():
    def shared(text: str) -> str:
        source = re.search(r"CREATE TABLE trades \((.*?)\n\) WITH", text, re.S).group(1)
        views = [re.search(rf"CREATE TEMPORARY VIEW {view} AS\n(.*?);", text, re.S).group(1)
                 for view in SHARED_VIEWS]
        return "\n".join([source, *views])

    texts = {path.name: shared(path.read_text()) for path in SCRIPTS}
    assert len(set(texts.values())) == 1, sorted(texts)


def test_window_sizes_fit_the_interval_literals():
    # INTERVAL 'n' SECOND(3) takes up to 999 seconds; the scripts write the sizes that way.
    windows = SETTINGS.windows
    assert 0 < windows.short_size_seconds < windows.size_seconds < 1000
    assert windows.size_seconds % windows.short_size_seconds == 0


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_one_validity_rule_for_the_watermark_and_the_views(script):
    """Only valid trades move event time: the WATERMARK clause and checked_trades' is_valid are the one
    condition ${trade_is_valid} (sql/include/trade_is_valid.sql)."""
    text = script.read_text()
    assert re.search(r"WATERMARK FOR ts AS CASE WHEN \$\{trade_is_valid\}\n", text)
    assert re.search(r"CREATE TEMPORARY VIEW checked_trades AS\n.*?\$\{trade_is_valid\} AS is_valid", text,
                     re.S)


def test_the_sql_rule_uses_the_bounds_of_the_trade_contract():
    from marketpulse import trade

    rule = sql_variables(SETTINGS)["trade_is_valid"]
    assert f"BETWEEN 4.9E-324 AND {trade.MAX_PRICE:.0f}" in rule
    assert f"|{trade.MAX_SIZE})" in rule and f"<= {trade.MAX_EVENT_TIME_MS}" in rule
    assert f"<= {trade.MAX_PAYLOAD_BYTES}" in rule
    assert trade.TRADE_ID_PATTERN.pattern in rule and trade.SYMBOL_PATTERN.pattern in rule
    assert "${" not in rule


def test_the_trade_contract_is_written_once():
    """marketpulse/trade.py's patterns and bounds reach the SQL only through the renderer: no script, no
    include and no other module spells them out again."""
    from marketpulse import trade

    literals = [trade.SYMBOL_PATTERN.pattern, trade.TRADE_ID_PATTERN.pattern, str(trade.MAX_EVENT_TIME_MS),
                f"{trade.MAX_PRICE:.0f}", "'[\"BUY\"]'"]
    places = [*SCRIPTS, *(REPO / "sql" / "include").glob("*.sql"), *(REPO / "jobs").glob("*.sql"),
              *(path for folder in ("marketpulse", "dashboard", "alerts", "generator", "jobs", "stack")
                for path in (REPO / folder).rglob("*.py") if path.name != "trade.py")]
    copies = [(path.relative_to(REPO).as_posix(), literal) for path in places for literal in literals
              if literal in path.read_text()]
    assert copies == []


def test_the_datastream_dead_letter_sink_matches_the_postgres_table():
    """The DataStream job's dead-letter sink writes columns of the table (payload_length is the trigger's)
    and upserts by its primary key, like window_metrics.sql's sink."""
    text = (REPO / "jobs" / "market_metrics_sinks.sql").read_text()
    text = text.replace("CREATE TEMPORARY TABLE", "CREATE TABLE")
    _connector, columns, key = tables(text)["dead_letters_sink"]
    pg_columns, pg_key = postgres_table("dead_letters")
    assert set(columns) == set(pg_columns) - {"payload_length"} and key == pg_key
