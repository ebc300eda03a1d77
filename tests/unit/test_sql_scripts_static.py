"""The Flink SQL scripts (sql/*.sql, each as the renderer composes it with its includes) follow the house
layout, use only known placeholders, and declare sinks that match the Postgres tables (columns and primary
keys); sql/pipeline.sql is every script in one job; nothing in sql/ is written twice. No cluster needed."""

import re
from pathlib import Path

import pytest

from marketpulse.config import load_settings
from marketpulse.sqltemplate import compose
from stack.sql import PLACEHOLDER, sql_variables

REPO = Path(__file__).resolve().parents[2]
SETTINGS = load_settings(environ={})
SCRIPTS = sorted((REPO / "sql").glob("*.sql"))
INCLUDES = sorted((REPO / "sql" / "include").glob("*.sql"))
COMPOSED = {script: compose(script) for script in SCRIPTS}
PIPELINE = REPO / "sql" / "pipeline.sql"
SCHEMA = "\n".join(path.read_text() for path in sorted((REPO / "db" / "schema").glob("*.sql")))


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
    pattern = r"CREATE (?:TEMPORARY )?TABLE (\w+) \((.*?)\n\) WITH \((.*?)\n\);"
    for name, body, options in re.findall(pattern, text, re.S):
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


def inserts(text: str) -> list[str]:
    return re.findall(r"^\s+INSERT INTO (\w+)$", text, re.M)


def test_the_config_runs_the_one_pipeline_and_it_holds_every_script():
    """make demo submits one SQL job; it writes every table every script writes, each insert once."""
    assert [REPO / script for script in SETTINGS.jobs.sql_scripts] == [PIPELINE]
    others = [script for script in SCRIPTS if script != PIPELINE]
    assert len(others) == 4
    assert sorted(inserts(COMPOSED[PIPELINE])) == sorted(name for script in others
                                                         for name in inserts(COMPOSED[script]))
    # One source of trades, each shared view once.
    assert COMPOSED[PIPELINE].count("CREATE TABLE trades (") == 1
    for view in ("on_time_trades", "long_windows", "short_closes"):
        assert COMPOSED[PIPELINE].count(f"CREATE TEMPORARY VIEW {view} AS") == 1, view


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_a_comment_over_every_statement_and_one_statement_set_last(script):
    found = statements(COMPOSED[script])
    kinds = [kind(statement) for _comment, statement in found]
    settings_first = kinds.count("SET")
    assert kinds[:settings_first] == ["SET"] * settings_first, kinds
    assert kinds.count("EXECUTE STATEMENT SET") == 1 and kinds[-1] == "EXECUTE STATEMENT SET"
    for comment, statement in found:
        assert comment.startswith("--"), f"no comment over: {statement[:80]}"
    body = found[-1][1]
    count = body.count("INSERT INTO")
    assert count >= 1 and len(re.findall(r"^\s*-- ", body, re.M)) >= count  # a comment over each INSERT
    # The trades topic is the first table: sources before the sinks that need them.
    assert next(iter(tables(COMPOSED[script]))) == "trades"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_only_known_placeholders_and_no_literal_endpoints(script):
    text = COMPOSED[script]
    assert set(PLACEHOLDER.findall(text)) <= set(sql_variables(SETTINGS))
    for literal in ("127.0.0.1", "localhost", ":9092", ":5432", "jdbc:postgresql:", "marketpulse'"):
        assert literal not in text, literal
        assert all(literal not in path.read_text() for path in INCLUDES), literal
    names = re.findall(r"SET 'pipeline.name' = '([^']+)';", text)
    assert names == ["marketpulse-sql-" + script.stem.replace("_", "-")]
    # A value of several lines in a comment would leave all but its first line uncommented.
    variables = sql_variables(SETTINGS)
    in_comments = {name for line in text.splitlines() if line.lstrip().startswith("--")
                   for name in PLACEHOLDER.findall(line) if "\n" in variables.get(name, "")}
    assert in_comments == set()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_sinks_match_the_postgres_tables(script):
    for name, (connector, columns, key) in tables(COMPOSED[script]).items():
        if connector != "marketpulse-jdbc":
            continue
        assert re.search(rf"'table-name' = '{name}'", COMPOSED[script])
        pg_columns, pg_key = postgres_table(name)
        assert columns == pg_columns, name
        assert key == pg_key, name


def test_no_block_of_six_lines_is_written_twice_in_sql():
    """Shared definitions live in sql/include/ and are included, never copied: no six consecutive
    (non-blank) lines appear twice anywhere in sql/."""
    seen: dict[tuple[str, ...], str] = {}
    repeated = []
    for path in [*SCRIPTS, *INCLUDES]:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        for index in range(len(lines) - 5):
            block = tuple(lines[index:index + 6])
            where = f"{path.relative_to(REPO)}:{index}"
            if block in seen and not seen[block].startswith(f"{path.relative_to(REPO)}:"):
                repeated.append((seen[block], where, block[0]))
            elif block in seen and int(seen[block].rsplit(":", 1)[1]) + 6 <= index:
                repeated.append((seen[block], where, block[0]))
            seen.setdefault(block, where)
    assert repeated == []


def test_window_sizes_fit_the_interval_literals():
    # INTERVAL 'n' SECOND(3) takes up to 999 seconds; the scripts write the sizes that way.
    windows = SETTINGS.windows
    assert 0 < windows.short_size_seconds < windows.size_seconds < 1000
    assert windows.size_seconds % windows.short_size_seconds == 0


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_one_validity_rule_for_the_watermark_and_the_views(script):
    """Only valid trades and heartbeats move event time: the WATERMARK clause and checked_trades' is_valid
    and is_heartbeat are the one condition each, ${trade_is_valid} (sql/include/trade_is_valid.sql) and
    ${record_is_heartbeat} (marketpulse/trade.py's HEARTBEAT_PATTERN)."""
    text = COMPOSED[script]
    assert re.search(r"WATERMARK FOR ts AS CASE WHEN \$\{trade_is_valid\} OR \$\{record_is_heartbeat\}\n",
                     text)
    assert re.search(r"CREATE TEMPORARY VIEW checked_trades AS\n.*?\$\{trade_is_valid\} AS is_valid, "
                     r"\$\{record_is_heartbeat\} AS is_heartbeat", text, re.S)


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


def test_every_ema_is_the_one_include_doubling_to_its_terms():
    """ewma, ema_fast, ema_slow and the MACD signal are sql/include/ema.sql with their span: each doubles
    1 -> EMA_TERMS terms with LAGs 1, 2, 4, ... EMA_TERMS / 2 (what docs/indicators.md states), and no
    script writes a doubling step itself."""
    from marketpulse.sqltemplate import EMA_SPANS, EMA_TERMS

    text = COMPOSED[REPO / "sql" / "indicators.sql"]
    names = {"ewma": "ewma_span", "ema_fast": "ema_fast_span", "ema_slow": "ema_slow_span",
             "macd_signal": "macd_signal_span"}
    assert sorted(names.values()) == sorted(EMA_SPANS)
    for name, span in names.items():
        lags = [int(lag) for lag in re.findall(rf"LAG\({name}_n(\d+), \1\)", text)]
        assert lags == [2 ** k for k in range(EMA_TERMS.bit_length() - 1)], name
        assert f"POWER(CAST(${{indicators_{span}}} - 1 AS DOUBLE)" in text, name
        assert text.count(f"CREATE TEMPORARY VIEW with_{name} AS") == 1
        assert f"{name}_n{EMA_TERMS} / {name}_d{EMA_TERMS} AS {name}" in text
    assert all("LAG(" not in path.read_text() or path.name == "ema_step.sql" for path in INCLUDES)
    assert "POWER(" not in (REPO / "sql" / "indicators.sql").read_text()


def test_the_indicator_alerts_are_anomaly_messages_with_the_known_rules():
    """The SQL job's alert rules go to the anomalies topic as the DataStream job's anomalies do: both sinks
    are the one anomaly message of include/anomalies_kafka.sql (key = symbol), under the rule names
    marketpulse.alert_rules labels."""
    from marketpulse.alert_rules import INDICATOR_RULES

    text = COMPOSED[REPO / "sql" / "indicators.sql"]
    include = "include/anomalies_kafka.sql table="
    assert f"-- include: {include}indicator_alerts_kafka" in (REPO / "sql" / "indicators.sql").read_text()
    assert f"-- include: ../sql/{include}anomalies_kafka" in \
        (REPO / "jobs" / "market_metrics_sinks.sql").read_text()
    connector, columns, _key = tables(text)["indicator_alerts_kafka"]
    assert connector == "kafka" and columns[:3] == ["symbol", "trade_id", "rule"]
    assert "'topic' = '${kafka_anomalies_topic}'" in text and "'key.fields' = 'symbol'" in text
    view = text[text.index("CREATE TEMPORARY VIEW indicator_alerts AS"):]
    view = view[:view.index(";")]
    assert sorted(re.findall(r"CAST\('(\w+)' AS STRING\)", view)) == sorted(INDICATOR_RULES)
