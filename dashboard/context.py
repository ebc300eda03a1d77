"""The refresh context: what every view renders from, resolved once per refresh tick.

`resolve` turns the database's series (which (engine, window size) pairs exist, from queries.series) and the
controls (range, anchor, engine, window) into a `ViewContext`: concrete [start, end) bounds and whether the
selection has data. It travels between callbacks through a dcc.Store as a plain dict (`to_store` /
`from_store`). The renderers below (banner, range label, control options, status pills) are pure functions
of it, unit-tested without a browser."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from dash import html

from dashboard import queries
from dashboard.health import ClusterHealth
from dashboard.ui import engine_label, fmt_age, fmt_time, testid

Present = dict[tuple[str, int], object]  # (engine, window seconds) -> its queries.series row


@dataclass(frozen=True)
class ViewContext:
    db_ok: bool
    range_key: str
    anchor: str
    engine: str
    window_seconds: int
    has_data: bool = False
    start: datetime | None = None
    end: datetime | None = None
    latest: datetime | None = None
    error: str | None = None

    @property
    def window(self) -> queries.TimeWindow:
        return queries.TimeWindow(self.start, self.end, self.anchor, self.range_key)

    def to_store(self) -> dict:
        data = dict(self.__dict__)
        for key in ("start", "end", "latest"):
            data[key] = data[key].isoformat() if data[key] else None
        return data

    @classmethod
    def from_store(cls, data: dict | None) -> ViewContext | None:
        if not data:
            return None
        data = dict(data)
        for key in ("start", "end", "latest"):
            data[key] = datetime.fromisoformat(data[key]) if data.get(key) else None
        return cls(**data)


def present_series(available: pd.DataFrame) -> Present:
    return {(row.engine, int(row.window_seconds)): row for row in available.itertuples()}


def resolve(present: Present, range_key: str, anchor: str, engine: str, window_seconds: int,
            now: datetime) -> ViewContext:
    row = present.get((engine, int(window_seconds)))
    earliest = row.earliest_start.to_pydatetime() if row is not None else None
    latest = row.latest_end.to_pydatetime() if row is not None else None
    window = queries.resolve_window(range_key, anchor, earliest, latest, now)
    return ViewContext(db_ok=True, range_key=range_key, anchor=anchor, engine=engine,
                       window_seconds=int(window_seconds), has_data=row is not None,
                       start=window.start, end=window.end, latest=latest)


def unreachable(error: str, range_key: str, anchor: str, engine: str, window_seconds: int) -> ViewContext:
    return ViewContext(db_ok=False, error=error, range_key=range_key, anchor=anchor, engine=engine,
                       window_seconds=int(window_seconds))


def banner(context: ViewContext, present: Present, where: str) -> tuple[list | None, str]:
    """The banner's children and class: database down, no data at all, or nothing for this selection."""
    if not context.db_ok:
        return ([html.Strong("Database unreachable. "),
                 f"PostgreSQL at {where} does not answer ({context.error}). "
                 "Charts are empty; the page retries on every refresh and recovers by itself."],
                "banner error")
    if not present:
        return ([html.Strong("No data yet. "),
                 f"The database {where} is reachable but window_metrics is empty. Start the trade "
                 "generator and the Flink jobs; this page fills in by itself as windows arrive."],
                "banner warn")
    if not context.has_data:
        others = ", ".join(f"{engine_label(e)} {s} s" for e, s in sorted(present))
        return ([html.Strong("No rows for this selection. "),
                 f"{engine_label(context.engine)} has no {context.window_seconds} s windows; "
                 f"data exists for: {others}."], "banner warn")
    return None, "banner hidden"


def market_banner(status: pd.DataFrame) -> list | None:
    """'Market closed' while every live source still running says its market is closed; None otherwise
    (synthetic data, or a market that is open)."""
    if status.empty or bool(status["is_open"].any()):
        return None
    row = status.iloc[0]
    opens = fmt_time(row.next_open.to_pydatetime()) + " UTC" if pd.notna(row.next_open) else "not known"
    sources = ", ".join(status["source"])
    return [html.Strong("Market closed. "),
            f"{row.exchange} is closed; the live source ({sources}) sends nothing until it opens at {opens}. "
            "Relative to 'latest data' the charts show the last session."]


def range_text(context: ViewContext, now: datetime):
    """The line under the controls: the bounds shown, what they are relative to, and whether data is live."""
    if not context.db_ok:
        return "No data: the database is unreachable."
    window, latest = context.window, context.latest
    if window.start is None:
        return "No windows for this selection yet."
    span = queries.RANGE_LABELS[window.range_key]
    what = "all" if window.range_key == "all" else f"last {span}"
    parts = [html.Span(f"{fmt_time(window.start)} → {fmt_time(window.end)} UTC", className="range-times")]
    if window.anchor == "latest":
        parts.insert(0, html.Span(f"{what} of data", className="range-anchor", **testid("range-anchor")))
        lag = (now - latest).total_seconds() if latest else 0
        if lag > 120:
            parts.append(html.Span(f"latest window ended {fmt_age(lag)} ago — historical data",
                                   className="range-stale", **testid("range-stale")))
        else:
            parts.append(html.Span("live", className="range-live"))
    else:
        parts.insert(0, html.Span(f"{what} up to now", className="range-anchor", **testid("range-anchor")))
        if latest is not None and latest < window.start:
            age = fmt_age((now - latest).total_seconds())
            parts.append(html.Span(f"no data this recent: latest window ended {age}"
                                   " ago — switch to 'latest data'", className="range-stale",
                                   **testid("range-stale")))
    return parts


def engine_options(present: Present | None) -> list[dict]:
    """Every engine; one without any series is disabled (unless nothing is known at all)."""
    return [{"label": engine_label(e), "value": e,
             "disabled": bool(present) and not any(key[0] == e for key in present)}
            for e in queries.ENGINES]


def window_options(present: Present | None, engine: str, sizes: list[int]) -> list[dict]:
    return [{"label": f"{s} s", "value": s, "disabled": bool(present) and (engine, s) not in present}
            for s in sizes]


def symbol_options(known: pd.DataFrame) -> list[dict]:
    return [{"label": f"{r.symbol} · {r.company}" if r.company else r.symbol, "value": r.symbol}
            for r in known.itertuples()]


def pills(db_ok: bool, health: ClusterHealth | None) -> list:
    """PostgreSQL and Flink status. `health` None: the first background check has not answered yet."""
    if health is None:
        flink = html.Span("Flink … checking", className="pill", **testid("pill-flink"))
    else:
        running = sum(1 for job in health.jobs if job.state == "RUNNING")
        flink = html.Span(f"Flink ✓ {running} running" if health.ok else "Flink ✗ unreachable",
                          className="pill ok" if health.ok else "pill bad", **testid("pill-flink"))
    database = html.Span("PostgreSQL ✓" if db_ok else "PostgreSQL ✗",
                         className="pill ok" if db_ok else "pill bad", **testid("pill-db"))
    return [database, flink]
