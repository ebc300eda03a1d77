"""Pipeline health: the Flink cluster and every job its REST API lists (state, uptime, throughput, the
source's pending records, backpressure, last checkpoint), the Kafka consumer lag per group and partition
(from Kafka's committed offsets), and the late and bad records in PostgreSQL.

Flink's part and the lag come from the background HealthMonitor's latest snapshot (never a REST or Kafka
call in the callback), so a slow Flink or Kafka shows slightly old figures instead of freezing the page."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from dash import Input, Output, html, no_update

from dashboard import queries
from dashboard.context import ViewContext
from dashboard.db import DatabaseUnavailable
from dashboard.health import ClusterHealth, ConsumerLag, Job
from dashboard.ui import empty, engine_label, fmt_age, testid

NAME, LABEL = "health", "Pipeline health"
JOB_COLUMNS = ("Job", "State", "Uptime", "In /s", "Out /s", "Pending (source)", "Backpressure",
               "Last checkpoint")
LAG_COLUMNS = ("Consumer group", "Topic", "Lag", "Per partition: lag (committed / log end)")
RECORD_KINDS = (("late_trades", "Late trades"), ("dead_letters", "Dead letters (bad records)"))


def layout(deps) -> html.Div:
    return html.Div(id="view-health", className="view", **testid("view-health"), children=[
        html.Div(className="panel", children=[
            html.Div(className="panel-head", children=[
                html.Span("Flink jobs", className="panel-title"),
                html.A("Open Flink UI ↗", id="flink-ui-link", href=deps.settings.flink.rest_url,
                       target="_blank", className="link", **testid("flink-ui-link")),
            ]),
            html.Div(id="health-cluster", className="note", **testid("health-cluster")),
            html.Div(id="health-jobs", **testid("health-jobs")),
            html.Div("Pending (source): the Kafka source's own pendingRecords metric, where Flink reports "
                     "it (— otherwise).", className="note small"),
        ]),
        html.Div(className="panel", children=[
            html.Div(html.Span("Kafka consumer lag", className="panel-title"), className="panel-head"),
            html.Div(id="health-lag", **testid("health-lag")),
            html.Div("Log-end offset minus the group's committed offset, per partition, from Kafka. A Flink "
                     "job commits when a checkpoint completes, so a job that keeps up shows up to one "
                     "checkpoint interval of records; a stopped job's lag grows with every trade.",
                     className="note small"),
        ]),
        html.Div(className="panel", children=[
            html.Div(html.Span("Late and bad records (PostgreSQL)", className="panel-title"),
                     className="panel-head"),
            html.Div(id="health-pipeline", **testid("health-pipeline")),
        ]),
    ])


def cluster_line(health: ClusterHealth | None):
    if health is None:
        return "Asking Flink's REST API…"
    if not health.ok:
        return html.Span(f"Flink REST API unreachable: {health.error}", className="down")
    return (f"Flink {health.flink_version} · {health.taskmanagers} TaskManager(s) · "
            f"{health.slots_available}/{health.slots_total} slots free · {len(health.jobs)} job(s) listed")


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def checkpoint_text(job: Job, now_ms: float) -> str:
    cp = job.last_checkpoint
    if cp:
        age = fmt_age((now_ms - cp.finished_at_ms) / 1000) if cp.finished_at_ms else "?"
        return f"#{cp.id} {age} ago · {cp.duration_ms or 0} ms"
    return "none yet" if job.state == "RUNNING" else "—"


def job_row(job: Job, now_ms: float) -> html.Tr:
    uptime = fmt_age(job.duration_ms / 1000)
    return html.Tr(**{"data-testid": "job-row", "data-job-id": job.id, "data-state": job.state}, children=[
        html.Td([html.Div(job.name, className="job-name"), html.Div(job.id, className="job-id")]),
        html.Td(html.Span(job.state, className=f"state state-{job.state.lower()}")),
        html.Td(uptime if job.state == "RUNNING" else f"ran {uptime}"),
        html.Td(rate(job.records_in_per_s), className="num"),
        html.Td(rate(job.records_out_per_s), className="num"),
        html.Td("—" if job.pending_records is None else f"{job.pending_records:,.0f}", className="num"),
        html.Td(html.Span(job.backpressure or "—",
                          className=f"bp bp-{job.backpressure}" if job.backpressure else "muted")),
        html.Td(checkpoint_text(job, now_ms))])


def jobs_table(health: ClusterHealth | None, now: datetime):
    if health is None or not health.ok:
        return empty("No job information.", "jobs-empty")
    if not health.jobs:
        return empty("The cluster lists no jobs.", "jobs-empty")
    now_ms = now.timestamp() * 1000
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in JOB_COLUMNS])),
                       html.Tbody([job_row(job, now_ms) for job in health.jobs])], className="data-table")


def lag_table(lag: ConsumerLag | None):
    if lag is None:
        return empty("Asking Kafka…", "lag-empty")
    if not lag.ok:
        return html.Div(f"Kafka unreachable: {lag.error}", className="empty down", **testid("lag-empty"))
    if not lag.groups:
        return empty("No consumer group has committed offsets on the watched topics yet.", "lag-empty")
    rows = []
    for group in lag.groups:
        parts = [html.Span(f"p{p.partition} {p.lag:,}", className="lag-part",
                           title=f"committed {'none' if p.committed is None else f'{p.committed:,}'} / "
                                 f"log end {p.end_offset:,}",
                           **{"data-partition": str(p.partition), "data-lag": str(p.lag)})
                 for p in group.partitions]
        rows.append(html.Tr(**{"data-testid": "lag-row", "data-group": group.group, "data-topic": group.topic,
                               "data-total": str(group.total)}, children=[
            html.Td(group.group), html.Td(group.topic), html.Td(f"{group.total:,}", className="num"),
            html.Td(parts)]))
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in LAG_COLUMNS])), html.Tbody(rows)],
                      className="data-table")


def pipeline_panel(counts: pd.DataFrame, reasons: pd.DataFrame):
    """Late trades and dead letters: all-time total, in the range, per engine; the top dead-letter reasons."""
    cells = []
    for kind, label in RECORD_KINDS:
        part = counts[counts["kind"] == kind] if not counts.empty else counts
        total = int(part["total"].sum()) if not part.empty else 0
        in_range = int(part["in_range"].sum()) if not part.empty else 0
        detail = ", ".join(f"{engine_label(r.engine)} {int(r.total):,}" for r in part.itertuples()) \
            or "none recorded"
        cells.append(html.Div(className="card", **testid(f"pipeline-{kind}"), children=[
            html.Div(label, className="card-label"),
            html.Div(f"{total:,}", className="card-value", **testid(f"pipeline-{kind}-total")),
            html.Div(f"{in_range:,} in the selected range · {detail}", className="card-sub")]))
    reason_list = None
    if not reasons.empty:
        items = [html.Li(f"{r.reason} — {int(r.records):,}") for r in reasons.itertuples()]
        reason_list = html.Div([html.Div("Top dead-letter reasons", className="card-label"),
                                html.Ul(items, className="reasons")])
    return html.Div([html.Div(cells, className="cards"), reason_list])


def render_pipeline(db, context: ViewContext | None):
    window = context.window if context else None
    try:
        counts = queries.pipeline_counts(db, window.start if window else None, window.end if window else None)
        reasons = queries.dead_letter_reasons(db)
    except DatabaseUnavailable:
        return html.Div("Database unreachable", className="empty")
    return pipeline_panel(counts, reasons)


def register(app, deps) -> None:
    @app.callback(
        Output("health-cluster", "children"), Output("health-jobs", "children"),
        Output("health-lag", "children"), Output("health-pipeline", "children"),
        Input("tick", "n_intervals"), Input("tabs", "value"), Input("context", "data"))
    def render_health(_tick, tab, stored):
        if tab != NAME:
            return no_update, no_update, no_update, no_update
        health = deps.monitor.latest()
        return (cluster_line(health), jobs_table(health, datetime.now(UTC)),
                lag_table(deps.monitor.latest_lag()),
                render_pipeline(deps.db, ViewContext.from_store(stored)))
