"""marketpulse.sqltemplate: the values the SQL scripts are rendered with."""

import pytest

from marketpulse.config import load_settings
from marketpulse.sqltemplate import (
    EMA_TERMS,
    MAX_EMA_TRUNCATED_WEIGHT,
    TemplateError,
    compose,
    ema_truncated_weight,
    render,
    seconds_text,
    sql_variables,
)


@pytest.mark.parametrize(("milliseconds", "text"), [
    (2000, "2"), (1500, "1.5"), (1, "0.001"), (0, "0"), (10_000, "10"), (1_234_567, "1234.567"),
    (999_999, "999.999"),
])
def test_durations_are_exact_decimal_seconds(milliseconds, text):
    assert seconds_text(milliseconds) == text


def test_the_out_of_orderness_reaches_the_sql_exactly():
    settings = load_settings(environ={"MARKETPULSE_WINDOWS_MAX_OUT_OF_ORDERNESS_MS": "1234567"})
    assert sql_variables(settings)["max_out_of_orderness_seconds"] == "1234.567"  # was 1234.57 (:g)
    assert render("INTERVAL '${max_out_of_orderness_seconds}' SECOND(3)", sql_variables(settings)) == \
        "INTERVAL '1234.567' SECOND(3)"


def test_an_unknown_placeholder_names_the_known_ones():
    with pytest.raises(TemplateError, match=r"unknown placeholder\(s\) nope; known: a"):
        render("${nope}", {"a": 1})


# --- compose: includes and one statement set ------------------------------------------------------------

def write(folder, name: str, text: str):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_an_include_is_put_in_once_with_its_parameters_and_the_statement_sets_merge(tmp_path):
    write(tmp_path, "include/source.sql",
          "-- Source.\nCREATE TABLE src (a INT) WITH ('x' = '${sql_job_name}');\n")
    write(tmp_path, "include/view.sql",
          "-- View ${name}.\nCREATE TEMPORARY VIEW ${name} AS SELECT ${expr} FROM src;\n")
    statement_set = "EXECUTE STATEMENT SET\nBEGIN\n    INSERT INTO {} SELECT * FROM {};\nEND;\n"
    write(tmp_path, "one.sql", "-- include: include/source.sql\n"
                               "-- include: include/view.sql name=v1 expr=a\n"
                               "-- Set one.\n" + statement_set.format("t1", "v1"))
    write(tmp_path, "two.sql", "-- include: include/source.sql\n"
                               "-- include: include/view.sql name=v2 expr=${size}\n"
                               "-- Set two.\n" + statement_set.format("t2", "v2"))
    both = write(tmp_path, "both_jobs.sql", "-- include: one.sql\n-- include: two.sql\n")

    text = compose(both)
    assert text.count("CREATE TABLE src") == 1 and "('x' = 'marketpulse-sql-both-jobs')" in text
    assert "CREATE TEMPORARY VIEW v1 AS SELECT a FROM src;" in text
    assert "CREATE TEMPORARY VIEW v2 AS SELECT ${size} FROM src;" in text  # left for render()
    assert "(included above: include/source.sql)" in text
    assert text.endswith("EXECUTE STATEMENT SET\nBEGIN\n    INSERT INTO t1 SELECT * FROM v1;\n\n"
                         "    INSERT INTO t2 SELECT * FROM v2;\nEND;\n")
    assert text.count("EXECUTE STATEMENT SET") == 1 and "-- Set one." not in text
    # A script alone keeps its own statement set, untouched.
    assert compose(tmp_path / "one.sql").endswith("-- Set one.\n" + statement_set.format("t1", "v1"))


def test_a_missing_or_circular_include_is_a_clear_error(tmp_path):
    write(tmp_path, "a.sql", "-- include: b.sql\n")
    write(tmp_path, "b.sql", "-- include: a.sql\n")
    write(tmp_path, "c.sql", "-- include: include/nope.sql\n")
    with pytest.raises(TemplateError, match="a.sql includes itself: a.sql -> b.sql"):
        compose(tmp_path / "a.sql")
    with pytest.raises(TemplateError, match="cannot read .*nope.sql"):
        compose(tmp_path / "c.sql")


# --- indicator periods ----------------------------------------------------------------------------------

def test_indicator_frames_reach_the_sql_as_preceding_rows():
    settings = load_settings(environ={"MARKETPULSE_INDICATORS_SMA_LONG_BARS": "30"})
    variables = sql_variables(settings)
    assert variables["indicators_sma_long_bars_preceding"] == "29"
    assert variables["indicators_sma_bars_preceding"] == "19"
    assert variables["indicators_rsi_changes_preceding"] == "13"
    assert variables["indicators_ema_slow_span"] == "26"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("EMA_SLOW_SPAN", "38", r"leaves 0\.12% of its weight out"),  # (37/39)^128
    ("MACD_SIGNAL_SPAN", "0", "a whole number of bars >= 1"),
    ("RSI_CHANGES", "1", "needs 2 bars or more"),
])
def test_indicator_periods_the_sql_cannot_compute_are_refused(name, value, message):
    settings = load_settings(environ={f"MARKETPULSE_INDICATORS_{name}": value})
    with pytest.raises(TemplateError, match=message):
        sql_variables(settings)


def test_the_ema_truncation_is_what_docs_and_config_state():
    # 37 is the longest span the 128 bars hold to 0.1 %; span 26 leaves 5.3e-5 out (docs/indicators.md).
    assert ema_truncated_weight(37) <= MAX_EMA_TRUNCATED_WEIGHT < ema_truncated_weight(38)
    assert ema_truncated_weight(26) == pytest.approx(5.27e-5, rel=1e-3)
    assert EMA_TERMS == 128


# A space, both quotes, a backslash, a statement end, a comment and a placeholder.
HOSTILE = "p a'ss\"w\\rd;--%${x}"


def test_a_hostile_password_stays_one_string_literal_in_every_rendered_script():
    from pathlib import Path

    from marketpulse.sqltemplate import compose, render, split_statements, sql_variables

    repo = Path(__file__).resolve().parents[2]
    plain = load_settings(environ={"MARKETPULSE_POSTGRES_WRITER_PASSWORD": "plain"})
    hostile = load_settings(environ={"MARKETPULSE_POSTGRES_WRITER_PASSWORD": HOSTILE})
    literal = "'" + HOSTILE.replace("'", "''") + "'"
    for script in (repo / "sql/pipeline.sql", repo / "jobs/market_metrics_sinks.sql"):
        expected = split_statements(render(compose(script), sql_variables(plain)))
        got = split_statements(render(compose(script), sql_variables(hostile)))
        # The same statements, the password's literal where the plain one was, and nothing else changed.
        assert [statement.replace(literal, "'plain'") for statement in got] == expected, script.name
        assert sum(statement.count(f"'password' = {literal}") for statement in got) == \
            sum(statement.count("'password' = 'plain'") for statement in expected) >= 3
        assert all("'username' = 'marketpulse_writer'" in s for s in got if "'password'" in s)


def test_no_raw_password_placeholder_exists():
    from marketpulse.sqltemplate import sql_variables

    variables = sql_variables(load_settings(environ={"MARKETPULSE_POSTGRES_WRITER_PASSWORD": HOSTILE}))
    assert not [name for name in variables if "password" in name]
    assert variables["postgres_credentials"] == (
        "'username' = 'marketpulse_writer',\n    'password' = " + "'" + HOSTILE.replace("'", "''") + "'")


def test_the_datastream_jobs_anomaly_and_window_sinks_flush_within_the_low_latency_interval():
    """Rows a person waits on (an anomaly, a closed window and its multivariate score) reach PostgreSQL
    within LOW_LATENCY_FLUSH_INTERVAL of the sink getting them; the others batch (POSTGRES_SINK_TUNING)."""
    import re
    from pathlib import Path

    from marketpulse.sqltemplate import (
        LOW_LATENCY_FLUSH_INTERVAL,
        POSTGRES_SINK_TUNING,
        compose,
        render,
        split_statements,
        sql_variables,
    )

    script = Path(__file__).resolve().parents[2] / "jobs/market_metrics_sinks.sql"
    flush = {}
    for statement in split_statements(render(compose(script), sql_variables(load_settings(environ={})))):
        table = re.match(r"CREATE (?:TEMPORARY )?TABLE (?:IF NOT EXISTS )?(\w+)", statement)
        interval = re.search(r"'sink\.buffer-flush\.interval' = '([^']+)'", statement)
        if table and interval:
            flush[table.group(1)] = interval.group(1)
    batched = POSTGRES_SINK_TUNING["sink.buffer-flush.interval"]
    fast = LOW_LATENCY_FLUSH_INTERVAL
    assert flush == {"window_metrics_sink": fast, "anomalies_sink": fast, "window_anomalies_sink": fast,
                     "late_trades_sink": batched, "dead_letters_sink": batched}, flush
