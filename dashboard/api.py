"""JSON REST API on the Dash app's Flask server.

    GET /api/symbols
    GET /api/metrics?symbol=AAPL[&from=ISO][&to=ISO][&window=60][&engine=datastream][&limit=1000]
    GET /api/anomalies[?symbol=][&rule=][&from=][&to=][&limit=100]
    GET /api/health        database, Flink jobs, Kafka consumer lag per group and partition, record counts

Times are ISO-8601 (a value without an offset is read as UTC) and come back as UTC with a 'Z'.
Every parameter is checked: an unknown parameter or a bad value gives 400 with {"error": "..."},
an unknown symbol 404, an unreachable database 503."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

import numpy as np
import orjson
import pandas as pd
from flask import Blueprint, Flask, jsonify, request
from flask.json.provider import DefaultJSONProvider

from dashboard import queries
from dashboard.db import Database, DatabaseUnavailable
from dashboard.health import ClusterHealth, ConsumerLag, HealthMonitor

SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,15}$")
MAX_LIMIT = 10_000
FIRST_ANSWER_SECONDS = 10.0  # /api/health's first call waits this long for the monitor's first fetch


class BadRequest(ValueError):
    status = 400


class NotFound(LookupError):
    status = 404


# A time whose UTC offset lost its '+' to URL decoding (an unencoded "+00:00" in a query string arrives as
# " 00:00"): the date and time, then a space, then the offset's digits.
_OFFSET_WITHOUT_PLUS = re.compile(r"(.+\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)")


def parse_time(name: str, raw: str | None) -> datetime | None:
    if raw is None or raw == "":
        return None
    text = _OFFSET_WITHOUT_PLUS.sub(r"\1+\2", raw.strip())
    try:
        value = datetime.fromisoformat(text.replace(" ", "T"))
    except ValueError:
        raise BadRequest(f"{name}={raw!r} is not an ISO-8601 time (e.g. 2025-03-14T09:30:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_int(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}={value} is out of range [{low}, {high}]")
    return value


def parse_choice(name: str, raw: str | None, choices: tuple[str, ...], default: str | None) -> str | None:
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise BadRequest(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw


def parse_symbol(raw: str | None, required: bool) -> str | None:
    if raw is None or raw == "":
        if required:
            raise BadRequest("symbol is required")
        return None
    if not SYMBOL_RE.match(raw):
        raise BadRequest(f"symbol={raw!r} is not a ticker symbol (letters, digits, '.', '-', '_')")
    return raw.upper()


def check_params(allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")


def check_order(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and start >= end:
        raise BadRequest("from must be before to")


def iso(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def iso_column(values: pd.Series) -> list[str | None]:
    """iso() of every value of a column, vectorized for datetime columns."""
    if not pd.api.types.is_datetime64_any_dtype(values):
        return [iso(value) for value in values]
    utc = values.dt.tz_convert("UTC") if values.dt.tz is not None else values.dt.tz_localize("UTC")
    stamps = utc.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    text = np.datetime_as_string(stamps, unit="s")
    fraction = stamps.astype("int64") % 1_000_000 != 0  # as isoformat(): microseconds only when not zero
    if fraction.any():
        text = np.where(fraction, np.datetime_as_string(stamps, unit="us"), text)
    missing = np.isnat(stamps).tolist()
    return [None if gap else f"{value}Z" for value, gap in zip(text.tolist(), missing, strict=True)]


def records(frame: pd.DataFrame, time_columns: tuple[str, ...]) -> list[dict]:
    """The frame's rows as JSON-ready dicts: times as iso(), NaN/NaT as None, numpy scalars as Python's.
    Column by column (tolist() gives Python scalars): a 1,000-row /api/metrics spent most of its time in a
    per-value loop."""
    names = list(frame.columns)
    columns = []
    for name in names:
        column = frame[name]
        if name in time_columns:
            columns.append(iso_column(column))
            continue
        values = column.tolist()
        if column.dtype.kind in "fO" and column.isna().any():
            values = [None if missing else value for value, missing in zip(values, column.isna().tolist(),
                                                                            strict=True)]
        columns.append(values)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def create_blueprint(db: Database, monitor: HealthMonitor) -> Blueprint:
    api = Blueprint("api", __name__, url_prefix="/api")

    @api.errorhandler(BadRequest)
    @api.errorhandler(NotFound)
    def client_error(err):
        return jsonify(error=str(err.args[0] if err.args else err)), err.status

    @api.errorhandler(DatabaseUnavailable)
    def database_down(err):
        return jsonify(error=f"database unavailable: {err}"), 503

    @api.get("/symbols")
    def symbols():
        check_params(())
        frame = queries.symbols(db)
        frame = frame.astype(object).where(frame.notna(), None)
        return jsonify(count=len(frame), symbols=frame.to_dict("records"))

    @api.get("/metrics")
    def metrics():
        check_params(("symbol", "from", "to", "window", "engine", "limit"))
        args = request.args
        symbol = parse_symbol(args.get("symbol"), required=True)
        start, end = parse_time("from", args.get("from")), parse_time("to", args.get("to"))
        check_order(start, end)
        window = parse_int("window", args.get("window"), 60, 1, 86_400)
        engine = parse_choice("engine", args.get("engine"), queries.ENGINES, "datastream")
        limit = parse_int("limit", args.get("limit"), 1000, 1, MAX_LIMIT)
        rows, truncated = queries.candle_records(db, engine, window, symbol, start, end, limit=limit)
        if not rows and not queries.symbol_known(db, symbol):
            raise NotFound(f"unknown symbol {symbol!r}")
        return jsonify(symbol=symbol, engine=engine, window_seconds=window, **{"from": iso(start)},
                       to=iso(end), count=len(rows), truncated=truncated, metrics=rows)

    @api.get("/anomalies")
    def anomalies():
        check_params(("symbol", "rule", "from", "to", "limit"))
        args = request.args
        symbol = parse_symbol(args.get("symbol"), required=False)
        rule = parse_choice("rule", args.get("rule"), queries.RULES, None)
        start, end = parse_time("from", args.get("from")), parse_time("to", args.get("to"))
        check_order(start, end)
        limit = parse_int("limit", args.get("limit"), 100, 1, MAX_LIMIT)
        rows = queries.anomaly_records(db, symbol, rule, start, end, limit)
        return jsonify(count=len(rows), limit=limit, anomalies=rows)

    @api.get("/health")
    def health():
        check_params(())
        # Flink's and Kafka's state as the background monitor last fetched it (about [dashboard]
        # health_refresh_seconds old at most, `age_seconds`): a request that fetched them itself waited on
        # Flink's REST API, hundreds of ms under load. Only a server's very first answer waits for one.
        snapshot = monitor.latest() or monitor.wait_first(FIRST_ANSWER_SECONDS)
        cluster = (snapshot or ClusterHealth(ok=False, error="Flink has not answered yet")).as_dict()
        fetched_at = cluster.pop("fetched_at")  # time.monotonic(): only this process can read it
        cluster["age_seconds"] = round(time.monotonic() - fetched_at, 1) if snapshot else None
        lag = monitor.latest_lag()
        kafka = (lag or ConsumerLag(ok=False, error="Kafka has not answered yet")).as_dict()
        body = {"database": {"ok": True, "error": None}, "flink": cluster, "kafka": kafka, "pipeline": {},
                "data": []}
        try:
            counts = queries.pipeline_counts(db, None, None)
            for row in counts.itertuples():
                body["pipeline"].setdefault(row.kind, {})[row.engine] = int(row.total)
            body["data"] = records(queries.series(db), ("earliest_start", "latest_end"))
        except DatabaseUnavailable as err:
            body["database"] = {"ok": False, "error": str(err)}
        for kind in ("late_trades", "dead_letters"):
            body["pipeline"].setdefault(kind, {})
        body["status"] = "ok" if body["database"]["ok"] and cluster["ok"] and kafka["ok"] else (
            "degraded" if body["database"]["ok"] else "down")
        return jsonify(body), 200 if body["database"]["ok"] else 503

    @api.route("/<path:rest>")
    def not_found(rest):
        raise NotFound(f"no endpoint /api/{rest}; "
                       "try /api/symbols, /api/metrics, /api/anomalies, /api/health")

    return api


class FastJSON(DefaultJSONProvider):
    """Flask's JSON with orjson's encoder: the same document (keys sorted; datetimes, dataclasses and what
    else Flask knows go through Flask's own default), a tenth of the time of a 1,000-row /api/metrics."""

    OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
               | orjson.OPT_PASSTHROUGH_DATACLASS)

    def dumps(self, obj, **kwargs) -> str:
        if kwargs.get("indent"):  # debug mode's pretty printing
            return super().dumps(obj, **kwargs)
        return orjson.dumps(obj, default=self.default, option=self.OPTIONS).decode()


def register(server: Flask, db: Database, monitor: HealthMonitor) -> None:
    server.json = FastJSON(server)
    server.register_blueprint(create_blueprint(db, monitor))
