"""Small building blocks every view uses: test ids, labelled controls, cards, graphs, empty states and the
formatting of times, ages, prices and changes. Pure functions of their arguments (no database, no app)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from dash import dcc, html

from dashboard import figures

ENGINE_LABELS = {"datastream": "DataStream", "sql": "Flink SQL"}


def testid(name: str) -> dict:
    return {"data-testid": name}


def control(label: str, component, testid_name: str) -> html.Div:
    return html.Div([html.Label(label, className="control-label"), component], className="control",
                    **testid(testid_name))


def card(key: str, label: str) -> html.Div:
    return html.Div(className="card", id=f"card-{key}", **testid(f"card-{key}"), children=[
        html.Div(label, className="card-label"),
        html.Div("—", id=f"card-{key}-value", className="card-value", **testid(f"card-{key}-value")),
    ])


def graph(graph_id: str, height: int) -> dcc.Graph:
    return dcc.Graph(id=graph_id, figure=figures.empty_figure("Loading…", height),
                     config={"displaylogo": False, "responsive": True},
                     style={"height": f"{height}px"})


def empty(message: str, testid_name: str) -> html.Div:
    return html.Div(message, className="empty", **testid(testid_name))


def engine_label(engine: str) -> str:
    return ENGINE_LABELS.get(engine, engine)


def fmt_time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def fmt_age(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def fmt_number(value, digits: int) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:,.{digits}f}"


def fmt_price(value) -> str:
    return fmt_number(value, 2)


def fmt_change(value) -> html.Span:
    if value is None or pd.isna(value):
        return html.Span("—", className="muted")
    arrow = "▲" if value > 0 else "▼" if value < 0 else "•"
    return html.Span(f"{arrow} {value:+.2f}%", className="up" if value >= 0 else "down")
