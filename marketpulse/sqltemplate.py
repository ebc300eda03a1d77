"""Flink SQL kept in .sql files with ${placeholders}: render them from the settings and split them into
statements, without the stack (a PyFlink job renders its own sink DDL on the client with this module).

    variables = sql_variables(settings)       # ${kafka_bootstrap_servers}, ${postgres_jdbc_url}, ...
    for statement in split_statements(render(text, variables)):
        t_env.execute_sql(statement)

The names are those of stack/sql.py (settings.flat() but the passwords, plus postgres_jdbc_url,
postgres_credentials, window_size_ms, max_out_of_orderness_seconds, postgres_sink_options,
postgres_low_latency_sink_options and the indicator
frames' indicators_<frame>_preceding), so a script renders the same way in a job and in the SQL client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

from marketpulse import trade
from marketpulse.config import REPO_ROOT, Settings, postgres_jdbc_url, postgres_password, postgres_user

PLACEHOLDER = re.compile(r"\$\{([a-z0-9_]+)\}")
# `-- include: include/trades.sql` or, with parameters, `-- include: include/tumbling.sql window=long ...`.
INCLUDE = re.compile(r"^-- include: (\S+)((?: [a-z_]+=\S+)*)[ \t]*$", re.M)
# A statement set with the comment lines over it.
STATEMENT_SET = re.compile(r"((?:^--[^\n]*\n)*)^EXECUTE STATEMENT SET\n^BEGIN\n(.*?)^END;\n?", re.M | re.S)
MERGED_SET_COMMENT = ("-- Every INSERT of the scripts above in one statement set: one job that reads each "
                      "topic once.\n")


# The WITH options every PostgreSQL sink shares (rendered as ${postgres_sink_options}, after
# 'connector' = 'marketpulse-jdbc' and 'table-name'). The marketpulse-jdbc connector is Flink's JDBC sink
# whose close() cannot kill the TaskManager (flink-ext/); the values bound how long a failing write takes to
# fail the job, so the job's restart strategy (conf/flink/config.yaml), not the sink, rides out an outage:
# 3 retries sleep 0+1+2 s, and a dead connection is given up after 10 s (default 60 s), far below
# task.cancellation.timeout, so a sink never holds up the cancellation of its task.
POSTGRES_SINK_TUNING = {
    "sink.buffer-flush.max-rows": "500",
    "sink.buffer-flush.interval": "1s",
    "sink.max-retries": "3",
    "connection.max-retry-timeout": "10s",
}


# Sinks a person waits on (the DataStream job's anomalies, windows and window scores) write within this of
# getting a row; a batch then holds whatever the rate gives, so the cost at high rates is small (a drain
# fills the 500 rows first). The SQL pipeline's sinks keep POSTGRES_SINK_TUNING's 1 s.
LOW_LATENCY_FLUSH_INTERVAL = "100ms"


def sql_string(value: object) -> str:
    """A Flink SQL string literal: '...' with every ' doubled (a backslash is not an escape there)."""
    return "'" + str(value).replace("'", "''") + "'"


def with_options(options: Mapping[str, object]) -> str:
    """The body of a WITH (...) clause, every key and value a string literal."""
    return ",\n    ".join(f"{sql_string(key)} = {sql_string(value)}" for key, value in options.items())


def postgres_credentials(settings: Settings) -> dict[str, str]:
    """The JDBC sinks' login: the writer role (INSERT/UPDATE, no DDL: db/grants.sql)."""
    return {"username": postgres_user(settings, "writer"), "password": postgres_password(settings, "writer")}


def postgres_sink_options(settings: Settings, flush_interval: str | None = None) -> str:
    options = {"url": postgres_jdbc_url(settings), **postgres_credentials(settings), **POSTGRES_SINK_TUNING}
    if flush_interval:
        options["sink.buffer-flush.interval"] = flush_interval
    return with_options(options)


class TemplateError(ValueError):
    """A placeholder has no value, or the text cannot be split into statements."""


def seconds_text(milliseconds: int) -> str:
    """Milliseconds as an exact decimal number of seconds for an INTERVAL literal: 1234567 -> "1234.567",
    2000 -> "2" (a float format such as :g would round to 6 significant digits)."""
    return f"{Decimal(milliseconds).scaleb(-3).normalize():f}"


# The SQL form of parse_trade's rules (one condition every script uses as ${trade_is_valid}).
TRADE_IS_VALID_SQL = REPO_ROOT / "sql" / "include" / "trade_is_valid.sql"


def trade_contract_variables() -> dict[str, str]:
    """marketpulse/trade.py's bounds and patterns as the SQL scripts write them, and ${trade_is_valid}."""
    size_digits = len(str(trade.MAX_SIZE))
    if trade.MAX_SIZE != 10 ** (size_digits - 1):
        raise TemplateError(f"MAX_SIZE {trade.MAX_SIZE} is not a power of ten, which the SQL size pattern "
                            "assumes")
    values = {
        "trade_max_payload_bytes": str(trade.MAX_PAYLOAD_BYTES),
        "trade_id_pattern": trade.TRADE_ID_PATTERN.pattern,
        "trade_symbol_pattern": trade.SYMBOL_PATTERN.pattern,
        "trade_max_price": f"{trade.MAX_PRICE:.0f}",
        # [1, MAX_SIZE]: up to one digit fewer than MAX_SIZE, or MAX_SIZE itself (JSON text of the number).
        "trade_size_pattern": f"([1-9][0-9]{{0,{size_digits - 2}}}|{trade.MAX_SIZE})",
        "trade_sides_json": ", ".join(f"'[\"{side}\"]'" for side in trade.SIDES),
        "trade_max_event_time_ms": str(trade.MAX_EVENT_TIME_MS),
        "trade_event_time_pattern": f"(0|[1-9][0-9]{{0,{len(str(trade.MAX_EVENT_TIME_MS)) - 1}}})",
    }
    condition = "\n".join(line for line in TRADE_IS_VALID_SQL.read_text().splitlines()
                          if not line.startswith("--"))
    values["trade_is_valid"] = render(condition, values).strip()
    # A heartbeat (marketpulse/trade.py): exactly its text, with an event time inside the trade bounds.
    heartbeat = trade.HEARTBEAT_PATTERN.pattern.decode()
    values["record_is_heartbeat"] = (
        f"COALESCE(REGEXP(CAST(`value` AS STRING), '^{heartbeat}\\z') AND TRY_CAST(REGEXP_EXTRACT("
        f"CAST(`value` AS STRING), '^{heartbeat}\\z', 1) AS BIGINT) <= {trade.MAX_EVENT_TIME_MS}, FALSE)")
    return values


# sql/include/ema.sql weighs the last EMA_TERMS bars (7 doublings); a longer span would need more steps, so
# the settings may not leave out more than MAX_EMA_TRUNCATED_WEIGHT of the recursive EMA's weight.
EMA_TERMS = 128
MAX_EMA_TRUNCATED_WEIGHT = 0.001
EMA_SPANS = ("ewma_span", "ema_fast_span", "ema_slow_span", "macd_signal_span")
# Indicators over the last n bars: an OVER frame written ROWS BETWEEN n - 1 PRECEDING (a literal there).
FRAME_LENGTHS = ("sma_bars", "sma_long_bars", "volatility_returns", "rsi_changes")


def ema_truncated_weight(span: int, terms: int = EMA_TERMS) -> float:
    """The share of a recursive EMA's weight on values more than `terms` back: q^terms, q = 1 - 2/(span+1)."""
    return (1 - 2 / (span + 1)) ** terms


def indicator_variables(settings: Settings) -> dict[str, str]:
    """${indicators_<frame>_preceding} for sql/indicators.sql's OVER frames; refuses periods the SQL cannot
    compute as docs/indicators.md states them."""
    indicators = settings.indicators
    values = {}
    for key in FRAME_LENGTHS:
        length = getattr(indicators, key)
        if not isinstance(length, int) or length < 2:
            raise TemplateError(f"indicators.{key} = {length!r}: an indicator frame needs 2 bars or more")
        values[f"indicators_{key}_preceding"] = str(length - 1)
    for key in EMA_SPANS:
        span = getattr(indicators, key)
        if not isinstance(span, int) or span < 1:
            raise TemplateError(f"indicators.{key} = {span!r}: an EMA span is a whole number of bars >= 1")
        if ema_truncated_weight(span) > MAX_EMA_TRUNCATED_WEIGHT:
            raise TemplateError(f"indicators.{key} = {span}: the EMA weighs the last {EMA_TERMS} bars, which "
                                f"leaves {ema_truncated_weight(span):.2%} of its weight out (at most "
                                f"{MAX_EMA_TRUNCATED_WEIGHT:.1%}); a longer span needs more doubling steps "
                                "in sql/include/ema.sql")
    return values


def sql_variables(settings: Settings) -> dict[str, str]:
    # Passwords only ever go into a script quoted, through the options below: no raw ${...password} variable.
    values = {key: str(value) for key, value in settings.flat().items()
              if not isinstance(value, list) and not key.endswith(("_password", "_password_file"))}
    values["postgres_jdbc_url"] = postgres_jdbc_url(settings)
    # 'username' = ..., 'password' = ...: for a script's own JDBC table (the tests' probes).
    values["postgres_credentials"] = with_options(postgres_credentials(settings))
    values["window_size_ms"] = str(settings.windows.size_seconds * 1000)
    values["max_out_of_orderness_seconds"] = seconds_text(int(settings.windows.max_out_of_orderness_ms))
    values["postgres_sink_options"] = postgres_sink_options(settings)
    values["postgres_low_latency_sink_options"] = postgres_sink_options(settings, LOW_LATENCY_FLUSH_INTERVAL)
    return values | indicator_variables(settings) | trade_contract_variables()


def render(text: str, variables: Mapping[str, object]) -> str:
    """Fills every ${name}; an unknown name is an error listing the known ones, never left in place."""
    unknown = sorted({name for name in PLACEHOLDER.findall(text) if name not in variables})
    if unknown:
        raise TemplateError(f"unknown placeholder(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(variables))}")
    return PLACEHOLDER.sub(lambda match: str(variables[match.group(1)]), text)


def sql_job_name(script: Path) -> str:
    """The Flink job name of a script in sql/: marketpulse-sql-<file name>, e.g. marketpulse-sql-pipeline
    (its ${sql_job_name}, also the Kafka consumer group of its sources)."""
    return "marketpulse-sql-" + script.stem.replace("_", "-")


def compose(script: Path) -> str:
    """The script with its `-- include:` lines replaced by the included files, and all the statement sets
    this brings together merged into one at the end, so that the whole text is one Flink job.

    An include names a file relative to the including one, and may give it parameters (`name=value`, the
    value may hold ${placeholders}); the included text's ${name} is the value. A file is included once
    per set of parameters, however many scripts include it: shared views are defined once per job.
    ${sql_job_name} is the top-level script's job name; every other placeholder is left for render()."""
    seen: set[tuple[Path, tuple]] = set()

    def expand(path: Path, parameters: dict[str, str], chain: tuple[Path, ...]) -> str:
        if path in chain:
            raise TemplateError(f"{path.name} includes itself: {' -> '.join(p.name for p in chain)}")
        try:
            text = path.read_text()
        except OSError as err:
            raise TemplateError(f"cannot read {path}: {err.strerror}") from None
        text = PLACEHOLDER.sub(lambda m: parameters.get(m.group(1), m.group(0)), text)

        def include(match: re.Match) -> str:
            target = (path.parent / match.group(1)).resolve()
            arguments = dict(pair.split("=", 1) for pair in match.group(2).split())
            key = (target, tuple(sorted(arguments.items())))
            if key in seen:
                return f"-- (included above: {match.group(1)}{match.group(2)})"
            seen.add(key)
            return expand(target, arguments, (*chain, path)).rstrip("\n") + "\n"

        return INCLUDE.sub(include, text)

    text = expand(script.resolve(), {}, ()).replace("${sql_job_name}", sql_job_name(script))
    sets = STATEMENT_SET.findall(text)
    if len(sets) > 1:
        bodies = "\n".join(body.rstrip("\n") + "\n" for _comment, body in sets)
        text = STATEMENT_SET.sub("", text).rstrip("\n") + "\n\n" + MERGED_SET_COMMENT + \
            f"EXECUTE STATEMENT SET\nBEGIN\n{bodies}END;\n"
    return text


def split_statements(text: str) -> list[str]:
    """The statements of a script, without `--` comments and the closing `;`, in order.

    Semicolons and `--` inside 'single-quoted strings' (with '' escapes), "quoted" or `quoted` identifiers
    are text, not syntax; a string left open is an error. Blank statements are dropped.
    """
    statements: list[str] = []
    current: list[str] = []
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if char in "'\"`":
            end = index + 1
            while True:
                end = text.find(char, end)
                if end < 0:
                    raise TemplateError(f"unterminated {char} quote starting at offset {index}")
                if text.startswith(char * 2, end):  # doubled quote = escaped quote
                    end += 2
                    continue
                break
            current.append(text[index:end + 1])
            index = end + 1
        elif text.startswith("--", index):
            newline = text.find("\n", index)
            index = length if newline < 0 else newline
        elif char == ";":
            statements.append("".join(current))
            current = []
            index += 1
        else:
            current.append(char)
            index += 1
    statements.append("".join(current))
    return [statement.strip() for statement in statements if statement.strip()]
