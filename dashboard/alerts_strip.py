"""The live alert strip: the newest alerts the alert service (python -m alerts) delivered, newest first, with
symbol, rule, statistic, price, event time and age, refreshed on its own.

Data: alert_decisions rows with decision 'delivered' (db/schema/006_alerts.sql), via
queries.recent_alerts; the strip shows a short note while the table is absent or empty, and when the
database is down.

Refresh: polling, with its own dcc.Interval every [dashboard] refresh_seconds (not the page's Refresh
control: pausing the charts does not pause alerts). Not push: Dash has no first-class server push; SSE or
WebSockets would need an extension (dash-extensions' EventSource/WebSocket, or a Quart/ASGI server in
place of Flask), i.e. a new dependency and a second server-side channel for one small panel. One indexed
query (alert_decisions_delivered_by_time) per tick is cheap, and an alert appears within one refresh
interval of its decision row, on top of the service's own delivery time.

Hooks: `layout(settings)` where the strip goes, `register(app, db, settings)` for its callback."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from dash import Input, Output, dcc, html

from dashboard import queries
from dashboard.db import Database, DatabaseUnavailable
from marketpulse.alert_rules import ALERT_RULE_LABELS
from marketpulse.alert_rules import statistic_text as rule_statistic_text
from marketpulse.analytics.detector import PRICE_JUMP
from marketpulse.config import Settings

FRESH_SECONDS = 60


def strip_rows(settings: Settings) -> int:
    return int(getattr(getattr(settings, "alerts", None), "strip_rows", 8))


def layout(settings: Settings) -> html.Div:
    return html.Div(id="alert-strip", className="alert-strip", **{"data-testid": "alert-strip"}, children=[
        html.Div([html.Span("●", className="alert-strip-dot"),
                  html.Span("Alerts", className="alert-strip-title")], className="alert-strip-head"),
        html.Div(html.Span("Loading…", className="alert-strip-note"), id="alert-strip-items",
                 className="alert-strip-items", **{"data-testid": "alert-strip-items"}),
        dcc.Interval(id="alert-strip-tick", interval=settings.dashboard.refresh_seconds * 1000,
                     n_intervals=0),
    ])


def age_text(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def statistic_text(rule: str, value) -> str:
    if value is None or pd.isna(value):
        return ""
    return rule_statistic_text(rule, value, digits=2 if rule == PRICE_JUMP else 1)


def items(frame: pd.DataFrame, now: datetime) -> list:
    """One chip per alert, newest first (the query's order)."""
    chips = []
    for r in frame.to_dict("records"):
        event_time = r["event_time"].to_pydatetime() if hasattr(r["event_time"], "to_pydatetime") \
            else r["event_time"]
        age = (now - event_time).total_seconds()
        price = "—" if r["price"] is None or pd.isna(r["price"]) else f"{r['price']:,.2f}"
        chips.append(html.Div(
            className="alert-chip" + (" fresh" if age < FRESH_SECONDS else ""),
            title=f"trade {r['trade_id']} · {r['rule']} · decided {r['decided_at']:%H:%M:%S} UTC",
            **{"data-testid": "alert-chip", "data-symbol": r["symbol"], "data-rule": r["rule"]},
            children=[
                html.Span(r["symbol"], className="alert-chip-symbol"),
                html.Span(ALERT_RULE_LABELS.get(r["rule"], r["rule"]),
                          className=f"alert-chip-rule rule-{r['rule']}"),
                html.Span(statistic_text(r["rule"], r["z_score"]), className="alert-chip-stat"),
                html.Span(price, className="alert-chip-price"),
                html.Span(f"{event_time.astimezone(UTC):%H:%M:%S}", className="alert-chip-time"),
                html.Span(age_text(age), className="alert-chip-age"),
            ]))
    return chips


def register(app, db: Database, settings: Settings) -> None:
    limit = strip_rows(settings)

    @app.callback(Output("alert-strip-items", "children"), Input("alert-strip-tick", "n_intervals"))
    def render_alert_strip(_tick):
        try:
            frame = queries.recent_alerts(db, limit)
        except DatabaseUnavailable:
            return html.Span("Alerts unavailable: the database does not answer.",
                             className="alert-strip-note")
        if frame is None:
            return html.Span("No alert table yet (db/schema/006_alerts.sql is applied by make up).",
                             className="alert-strip-note")
        if frame.empty:
            return html.Span("No alerts delivered yet. The alert service (python -m alerts; make demo starts "
                             "it) adds them here as they are sent.", className="alert-strip-note")
        return items(frame, datetime.now(UTC))
