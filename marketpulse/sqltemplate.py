"""Flink SQL kept in .sql files with ${placeholders}: render them from the settings and split them into
statements, without the stack (a PyFlink job renders its own sink DDL on the client with this module).

    variables = sql_variables(settings)       # ${kafka_bootstrap_servers}, ${postgres_jdbc_url}, ...
    for statement in split_statements(render(text, variables)):
        t_env.execute_sql(statement)

The names are those of stack/sql.py (settings.flat() plus postgres_jdbc_url, window_size_ms,
max_out_of_orderness_seconds, postgres_sink_options and postgres_low_latency_sink_options), so a script
renders the same way in a job and in the SQL client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

from marketpulse import trade
from marketpulse.config import REPO_ROOT, Settings, postgres_jdbc_url

PLACEHOLDER = re.compile(r"\$\{([a-z0-9_]+)\}")


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


# Sinks a person waits on (anomalies) write within this of getting a row; a batch then holds whatever the
# rate gives, so the cost at high rates is small. Window sinks keep POSTGRES_SINK_TUNING's 1 s.
LOW_LATENCY_FLUSH_INTERVAL = "100ms"


def postgres_sink_options(settings: Settings, flush_interval: str | None = None) -> str:
    options = {"url": postgres_jdbc_url(settings), "username": settings.postgres.user,
               "password": settings.postgres.password, **POSTGRES_SINK_TUNING}
    if flush_interval:
        options["sink.buffer-flush.interval"] = flush_interval
    quoted = {key: str(value).replace("'", "''") for key, value in options.items()}
    return ",\n    ".join(f"'{key}' = '{value}'" for key, value in quoted.items())


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
    return values


def sql_variables(settings: Settings) -> dict[str, str]:
    values = {key: str(value) for key, value in settings.flat().items() if not isinstance(value, list)}
    values["postgres_jdbc_url"] = postgres_jdbc_url(settings)
    values["window_size_ms"] = str(settings.windows.size_seconds * 1000)
    values["max_out_of_orderness_seconds"] = seconds_text(int(settings.windows.max_out_of_orderness_ms))
    values["postgres_sink_options"] = postgres_sink_options(settings)
    values["postgres_low_latency_sink_options"] = postgres_sink_options(settings, LOW_LATENCY_FLUSH_INTERVAL)
    return values | trade_contract_variables()


def render(text: str, variables: Mapping[str, object]) -> str:
    """Fills every ${name}; an unknown name is an error listing the known ones, never left in place."""
    unknown = sorted({name for name in PLACEHOLDER.findall(text) if name not in variables})
    if unknown:
        raise TemplateError(f"unknown placeholder(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(variables))}")
    return PLACEHOLDER.sub(lambda match: str(variables[match.group(1)]), text)


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
