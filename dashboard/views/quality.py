"""Detection quality: the detector's anomalies scored against the generator's ground truth for the selected
range, per rule and per injected kind: precision, recall, F1 and median detection delay. The figures come
from marketpulse.analytics.scoring, the code `make score` prints with; the labels from injected_labels
(the Flink SQL job copies the injected topic there). Event time of the trades decides what is in range.
A range's scores are computed at most once every SCORE_SECONDS (10 s) per server process."""

from __future__ import annotations

from dash import Input, Output, html, no_update

from dashboard import queries
from dashboard.cache import ResponseCache
from dashboard.context import ViewContext
from dashboard.db import DatabaseUnavailable
from dashboard.ui import empty, testid
from marketpulse.analytics.scoring import MULTIVARIATE, ScoreTable, score

NAME, LABEL = "quality", "Detection quality"
NO_TABLE = ("No ground truth table yet (db/schema/009_injected_labels.sql, applied by make up); the Flink "
            "SQL job fills it from the generator's injected topic.")
NO_LABELS = ("No injected anomalies in this range. The ground truth comes from the synthetic generator "
             "(--anomaly-rate; make demo injects them); live market data has none.")


def layout(_deps) -> html.Div:
    return html.Div(id="view-quality", className="view", **testid("view-quality"), children=[
        html.Div(className="panel", children=[
            html.Div([html.Span("Detection quality", className="panel-title"),
                      html.Span("anomalies vs the generator's injected ground truth, by event time in range",
                                className="panel-hint")], className="panel-head"),
            html.Div(id="quality-summary", className="note", **testid("quality-summary")),
            html.Div(id="quality-table", **testid("quality-table")),
        ]),
    ])


def number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def delay(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def table(scores: ScoreTable) -> html.Table:
    kinds = scores.kinds
    head = ["Rule", "Found", "Precision", "Recall", "F1", "Median delay", *[f"Recall {k}" for k in kinds]]
    rows = [html.Tr(**{"data-testid": "quality-row", "data-rule": s.rule}, children=[
        html.Td(s.rule, className=f"rule rule-{s.rule}"), html.Td(f"{s.detections:,}", className="num"),
        html.Td(number(s.precision), className="num"), html.Td(number(s.overall_recall), className="num"),
        html.Td(number(s.f1), className="num"), html.Td(delay(s.median_delay_ms), className="num"),
        *[html.Td(number(s.recall.get(kind)), className="num") for kind in kinds]])
        for s in scores.rules.values()]
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(rows)],
                      className="data-table")


def summary(scores: ScoreTable, detections: int) -> str:
    labelled = ", ".join(f"{kind} {scores.labels[kind]:,}" for kind in scores.kinds)
    total = sum(scores.labels.values())
    windows = (f"; '{MULTIVARIATE}' counts anomalous 60 s windows, true when one holds an injected anomaly, "
               "recall per injected thing (an episode of a volume surge once)" if MULTIVARIATE in scores.rules
               else "")
    return (f"{total:,} injected anomalies ({labelled}) · {detections:,} anomaly rows · precision of a "
            "rule: its detections on a trade injected with a kind it targets; 'any' counts trades flagged by "
            "any rule; a rule's volume_surge_flat column is the share of surges it flagged a trade of"
            f"{windows}")


def render(db, context: ViewContext) -> tuple:
    """(summary, table) of the context's range; raises DatabaseUnavailable."""
    window = context.window
    inputs = queries.detection_inputs(db, window.start, window.end)
    if inputs is None:
        return "", empty(NO_TABLE, "quality-empty")
    detections, labels, windows = inputs
    if not labels:
        return f"{len(detections):,} anomaly rows in range", empty(NO_LABELS, "quality-empty")
    scores = score(detections, labels, windows)
    return summary(scores, len(detections)), table(scores)


def unreachable() -> tuple:
    return "", empty("Database unreachable", "quality-empty")


# Scores of a range are reused this long. They move slowly (a few detections a second against the thousands
# of a range), and scoring every label of the range on each refresh of each browser took a sixth of the
# server's CPU under 20 clients.
SCORE_SECONDS = 10.0


def register(app, deps) -> None:
    scored = ResponseCache(SCORE_SECONDS, max_entries=64)  # (range bounds) -> render()'s answer, this app's

    @app.callback(Output("quality-summary", "children"), Output("quality-table", "children"),
                  Input("context", "data"), Input("tabs", "value"))
    def render_quality(stored, tab):
        context = ViewContext.from_store(stored)
        if tab != NAME or context is None:
            return no_update, no_update
        if not context.db_ok:
            return unreachable()
        try:
            return scored.get((context.window.start, context.window.end), lambda: render(deps.db, context))
        except DatabaseUnavailable:
            return unreachable()
