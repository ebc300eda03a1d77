"""The forecaster's PostgreSQL side: the bars it reads (window_metrics), the forecasts it writes, the actual
closes it fills in and the error table it keeps (db/schema/011_forecasts.sql). No retries here: the service
loop logs a failure and tries again at its next cycle."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg2
import psycopg2.extras

from forecaster.plan import Score
from marketpulse.analytics.forecasting import MODELS, ErrorSummary, Forecast, error_summary, interval_score

DatabaseDown = (psycopg2.OperationalError, psycopg2.InterfaceError)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ALL_SYMBOLS = "all symbols"
# A bar's close is a trade the DataStream job's detector flagged as a price anomaly (a one-trade spike whose
# price was back at the next trade): the forecaster neither fits nor scores on it. `w` is the window_metrics
# row. The close is the bar's last trade, so a flagged trade in the bar at exactly that price is it.
FLAGGED_CLOSE = """EXISTS (SELECT 1 FROM anomalies a
    WHERE a.symbol = w.symbol AND a.rule IN ('price_zscore', 'price_jump')
      AND a.event_time >= w.window_start AND a.event_time < w.window_end AND a.price = w.close)"""


class SchemaMissing(RuntimeError):
    """The database has no forecast tables: the schema file 011 was not applied."""


@dataclass(frozen=True)
class Bars:
    """One symbol's bars, oldest first: window_start in epoch ms, the close, and whether the close is a
    trade the detector flagged (FLAGGED_CLOSE)."""
    symbol: str
    starts_ms: list[int]
    closes: list[float]
    flagged: list[bool]


@dataclass(frozen=True)
class ErrorRow:
    symbol: str
    model: str
    summary: ErrorSummary
    flagged: int                    # forecasts not scored: their actual close was a flagged trade
    spec: str | None
    level: float | None
    first_target: datetime | None
    last_target: datetime | None


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def to_ms(value: datetime) -> int:
    return (value - EPOCH) // timedelta(milliseconds=1)


def to_timestamp(epoch_ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=int(epoch_ms))


class Store:
    def __init__(self, dsn: str, where: str):
        self.dsn = dsn
        self.where = where
        self._conn = None

    def _cursor(self):
        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(self.dsn, connect_timeout=5, options="-c TimeZone=UTC",
                                          application_name="marketpulse-forecaster")
        return self._conn

    def transaction(self, operation):
        """Runs operation(cursor) in one transaction; a lost connection is dropped and re-raised."""
        try:
            conn = self._cursor()
            with conn, conn.cursor() as cur:
                return operation(cur)
        except DatabaseDown:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
        self._conn = None

    # --- reads -------------------------------------------------------------------------------------

    def check_schema(self) -> bool:
        def check(cur):
            cur.execute("SELECT to_regclass('public.forecasts') IS NOT NULL "
                        "AND to_regclass('public.forecast_errors') IS NOT NULL")
            return cur.fetchone()[0]

        return self.transaction(check)

    def bars(self, engine: str, bar_seconds: int, last: int | None) -> list[Bars]:
        """Each symbol's newest `last` bars (all of them with None), oldest first."""
        def read(cur):
            cur.execute(f"""
                SELECT w.symbol, w.window_start, w.close, {FLAGGED_CLOSE} FROM (
                    SELECT symbol, window_start, window_end, close,
                           row_number() OVER (PARTITION BY symbol ORDER BY window_start DESC) AS age
                    FROM window_metrics WHERE engine = %(engine)s AND window_seconds = %(seconds)s) w
                WHERE %(last)s::int IS NULL OR w.age <= %(last)s
                ORDER BY w.symbol, w.window_start""",
                        {"engine": engine, "seconds": bar_seconds, "last": last})
            return cur.fetchall()

        grouped: dict[str, Bars] = {}
        for symbol, start, close, flagged in self.transaction(read):
            bars = grouped.setdefault(symbol, Bars(symbol, [], [], []))
            bars.starts_ms.append(to_ms(start))
            bars.closes.append(float(close))
            bars.flagged.append(bool(flagged))
        return [grouped[symbol] for symbol in sorted(grouped)]

    def latest_origins(self, bar_seconds: int) -> dict[str, int]:
        """The newest origin (epoch ms) forecast per symbol: a symbol without a newer bar is not refitted."""
        def read(cur):
            cur.execute("SELECT symbol, max(origin_start) FROM forecasts WHERE bar_seconds = %s "
                        "GROUP BY symbol", (bar_seconds,))
            return {symbol: to_ms(origin) for symbol, origin in cur.fetchall()}

        return self.transaction(read)

    # --- writes ------------------------------------------------------------------------------------

    def write_forecasts(self, symbol: str, bar_seconds: int, engine: str, origin_ms: int, origin_close: float,
                        bars_used: int, forecasts: Iterable[Forecast], scales: Iterable[float] = ()) -> int:
        """Upserts one origin's forecasts (key: symbol, bar_seconds, model, origin_start, target_start), each
        with the calibration factor its interval got (`scales`, 1 when not given); the actual close already
        found for a target stays."""
        forecasts = list(forecasts)
        scales = list(scales) or [1.0] * len(forecasts)
        rows = [(symbol, bar_seconds, f.model, to_timestamp(origin_ms),
                 to_timestamp(origin_ms + h * bar_seconds * 1000), h, engine, f.spec, bars_used, origin_close,
                 f.point[h - 1], f.lower[h - 1], f.upper[h - 1], f.level, scale)
                for f, scale in zip(forecasts, scales, strict=True) for h in range(1, len(f.point) + 1)]

        def write(cur):
            psycopg2.extras.execute_values(cur, """
                INSERT INTO forecasts (symbol, bar_seconds, model, origin_start, target_start, horizon,
                                       engine, spec, bars_used, origin_close, point, lower, upper, level,
                                       interval_scale)
                VALUES %s
                ON CONFLICT (symbol, bar_seconds, model, origin_start, target_start) DO UPDATE SET
                    horizon = EXCLUDED.horizon, engine = EXCLUDED.engine, spec = EXCLUDED.spec,
                    bars_used = EXCLUDED.bars_used, origin_close = EXCLUDED.origin_close,
                    point = EXCLUDED.point, lower = EXCLUDED.lower, upper = EXCLUDED.upper,
                    level = EXCLUDED.level, interval_scale = EXCLUDED.interval_scale,
                    made_at = now()""", rows)
            return len(rows)

        return self.transaction(write)

    def scores(self, bar_seconds: int, per_model: int) -> list[Score]:
        """The conformity scores of the last `per_model` scored forecasts of each symbol and model (a flagged
        actual is not scored), for the next round's calibration (forecaster.plan.Calibration)."""
        def read(cur):
            cur.execute("""
                SELECT symbol, model, target_start, point, lower, upper, actual, interval_scale FROM (
                    SELECT *, row_number() OVER (PARTITION BY symbol, model
                                                 ORDER BY target_start DESC, origin_start DESC) AS newest
                    FROM forecasts
                    WHERE bar_seconds = %s AND actual IS NOT NULL AND NOT coalesce(actual_flagged, false)
                ) recent WHERE newest <= %s""", (bar_seconds, per_model))
            found = []
            for symbol, model, target, point, lower, upper, actual, scale in cur.fetchall():
                score = interval_score(point, lower, upper, actual, scale)
                if score is not None:
                    found.append(Score(symbol, model, to_ms(target), score))
            return found

        return self.transaction(read)

    def fill_actuals(self, engine: str, bar_seconds: int) -> int:
        """Sets `actual` to the target bar's close where that bar is now in window_metrics, and
        `actual_flagged` to whether that close is a flagged trade (FLAGGED_CLOSE)."""
        def fill(cur):
            cur.execute(f"""
                UPDATE forecasts f SET actual = w.close, actual_flagged = {FLAGGED_CLOSE}
                FROM window_metrics w
                WHERE f.actual IS NULL AND f.bar_seconds = %(seconds)s
                  AND w.engine = %(engine)s AND w.window_seconds = f.bar_seconds AND w.symbol = f.symbol
                  AND w.window_start = f.target_start""", {"engine": engine, "seconds": bar_seconds})
            return cur.rowcount

        return self.transaction(fill)

    def update_errors(self, bar_seconds: int) -> list[ErrorRow]:
        """Recomputes forecast_errors from every forecast with an actual (error_summary, the one definition
        of the figures); returns the rows written, then one per model over all symbols (ALL_SYMBOLS)."""
        def update(cur):
            cur.execute("""
                SELECT symbol, model, point, lower, upper, actual, target_start, spec, level, actual_flagged
                FROM forecasts WHERE bar_seconds = %s AND actual IS NOT NULL
                ORDER BY symbol, model, origin_start, target_start""", (bar_seconds,))
            groups, flagged = defaultdict(list), Counter()
            for symbol, model, *rest in cur.fetchall():
                if rest[-1]:
                    flagged[(symbol, model)] += 1
                else:
                    groups[(symbol, model)].append(rest)
            rows = []
            for key in sorted(set(groups) | set(flagged), key=lambda key: (key[0], MODELS.index(key[1]))):
                found = groups.get(key, [])
                summary = error_summary(row[:4] for row in found)
                targets = [row[4] for row in found]
                rows.append(ErrorRow(*key, summary, flagged[key], found[-1][5] if found else None,
                                     found[-1][6] if found else None, min(targets, default=None),
                                     max(targets, default=None)))
            if not rows:
                return rows
            totals = []  # over all symbols: printed and logged, not stored
            for model in MODELS:
                found = [row for (_, m), group in groups.items() if m == model for row in group]
                if found:
                    left_out = sum(n for (_, m), n in flagged.items() if m == model)
                    totals.append(ErrorRow(ALL_SYMBOLS, model, error_summary(r[:4] for r in found), left_out,
                                           None, found[-1][6], min(r[4] for r in found),
                                           max(r[4] for r in found)))
            psycopg2.extras.execute_values(cur, """
                INSERT INTO forecast_errors (symbol, bar_seconds, model, forecasts, flagged, mae, mape,
                                             coverage, level, spec, first_target, last_target)
                VALUES %s
                ON CONFLICT (symbol, bar_seconds, model) DO UPDATE SET
                    forecasts = EXCLUDED.forecasts, flagged = EXCLUDED.flagged, mae = EXCLUDED.mae,
                    mape = EXCLUDED.mape,
                    coverage = EXCLUDED.coverage, level = EXCLUDED.level, spec = EXCLUDED.spec,
                    first_target = EXCLUDED.first_target, last_target = EXCLUDED.last_target,
                    updated_at = now()""",
                [(r.symbol, bar_seconds, r.model, r.summary.n, r.flagged, r.summary.mae, r.summary.mape,
                  r.summary.coverage, r.level, r.spec, r.first_target, r.last_target) for r in rows])
            return rows + totals

        return self.transaction(update)
