"""The MarketPulse dashboard: layout and callbacks (Dash). Reads PostgreSQL and Flink's REST API only.

    python -m dashboard            # serves on [dashboard] host:port from conf/pipeline.toml

One callback (`update_context`) runs on every refresh tick: it checks the database, finds which
(engine, window size) series exist and turns the time-range controls into concrete [start, end) bounds,
stored in `context`. The views render from that context, only while visible. Time ranges are relative to
the latest window in the database by default (demo data may be historical), or to the wall clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dash
import pandas as pd
from dash import ALL, Input, Output, State, dcc, html, no_update

from dashboard import alerts_strip, api, figures, queries
from dashboard.db import Database, DatabaseUnavailable
from dashboard.health import FlinkClient
from marketpulse.config import Settings, load_settings, postgres_dsn

VIEWS = ("overview", "symbol", "anomalies", "health")
VIEW_LABELS = {"overview": "Market overview", "symbol": "Symbol", "anomalies": "Anomalies",
               "health": "Pipeline health"}
REFRESH_CHOICES = (1, 2, 5, 10)
ENGINE_LABELS = {"datastream": "DataStream", "sql": "Flink SQL"}
ANOMALY_ROWS = 200
CARDS = (("trades", "Trades"), ("volume", "Volume"), ("notional", "Notional"),
         ("symbols", "Active symbols"), ("anomalies", "Anomalies"))


def testid(name: str) -> dict:
    return {"data-testid": name}


# --- layout --------------------------------------------------------------------------------------

def control(label: str, component, testid_name: str) -> html.Div:
    return html.Div([html.Label(label, className="control-label"), component], className="control",
                    **testid(testid_name))


def controls(settings: Settings) -> html.Div:
    refresh = settings.dashboard.refresh_seconds
    choices = sorted(set(REFRESH_CHOICES) | {refresh})
    return html.Div(className="controls", children=[
        control("Symbol", dcc.Dropdown(id="symbol-select", options=[], value=None, clearable=False,
                                       placeholder="no symbols yet", className="dropdown symbol-dropdown"),
                "control-symbol"),
        control("Range", dcc.RadioItems(
            id="range-select", value="15m", inline=True, className="segmented",
            options=[{"label": queries.RANGE_LABELS[k], "value": k} for k in queries.RANGES]),
            "control-range"),
        control("Relative to", dcc.RadioItems(
            id="anchor-select", value="latest", inline=True, className="segmented",
            options=[{"label": "latest data", "value": "latest"}, {"label": "now", "value": "now"}]),
            "control-anchor"),
        control("Engine", dcc.RadioItems(
            id="engine-select", value="datastream", inline=True, className="segmented",
            options=[{"label": ENGINE_LABELS[e], "value": e} for e in queries.ENGINES]),
            "control-engine"),
        control("Window", dcc.RadioItems(
            id="window-select", value=settings.windows.size_seconds, inline=True, className="segmented",
            options=[{"label": f"{s} s", "value": s}
                     for s in (settings.windows.size_seconds, settings.windows.short_size_seconds)]),
            "control-window"),
        control("Refresh", dcc.Dropdown(
            id="refresh-select", value=refresh, clearable=False, searchable=False,
            className="dropdown refresh-dropdown",
            options=[{"label": f"every {s} s", "value": s} for s in choices]
            + [{"label": "paused", "value": 0}]), "control-refresh"),
    ])


def card(key: str, label: str) -> html.Div:
    return html.Div(className="card", id=f"card-{key}", **testid(f"card-{key}"), children=[
        html.Div(label, className="card-label"),
        html.Div("—", id=f"card-{key}-value", className="card-value", **testid(f"card-{key}-value")),
    ])


def graph(graph_id: str, height: int) -> dcc.Graph:
    return dcc.Graph(id=graph_id, figure=figures.empty_figure("Loading…", height),
                     config={"displaylogo": False, "responsive": True},
                     style={"height": f"{height}px"})


def overview_view() -> html.Div:
    return html.Div(id="view-overview", className="view", **testid("view-overview"), children=[
        html.Div([card(key, label) for key, label in CARDS], className="cards"),
        html.Div(className="grid-2", children=[
            html.Div(className="panel", children=[
                html.Div([html.Span("Watchlist", className="panel-title"),
                          html.Span("click a row for the symbol view", className="panel-hint")],
                         className="panel-head"),
                html.Div(id="watchlist", **testid("watchlist")),
            ]),
            html.Div(className="panel stack", children=[
                graph("volume-share-graph", 300), graph("top-movers-graph", 300)]),
        ]),
    ])


def symbol_view() -> html.Div:
    return html.Div(id="view-symbol", className="view", **testid("view-symbol"), children=[
        html.Div(className="panel", children=[
            html.Div(id="symbol-header", className="symbol-header", **testid("symbol-header")),
            html.Div(id="symbol-note", className="note", **testid("symbol-note")),
            graph("candles-graph", 660),
        ]),
    ])


def anomalies_view() -> html.Div:
    return html.Div(id="view-anomalies", className="view", **testid("view-anomalies"), children=[
        html.Div(className="panel", children=[
            html.Div(className="filters", children=[
                control("Symbol", dcc.Dropdown(id="anomaly-symbol-filter", options=[], value=None,
                                               placeholder="all symbols", className="dropdown"),
                        "filter-symbol"),
                control("Rule", dcc.Dropdown(
                    id="anomaly-rule-filter", value=None, placeholder="all rules", className="dropdown",
                    options=[{"label": r, "value": r} for r in queries.RULES]), "filter-rule"),
                html.Div(id="anomaly-count", className="note", **testid("anomaly-count")),
            ]),
            graph("anomaly-timeline-graph", 260),
            html.Div(id="anomaly-table", className="scroll", **testid("anomaly-table")),
        ]),
    ])


def health_view(settings: Settings) -> html.Div:
    return html.Div(id="view-health", className="view", **testid("view-health"), children=[
        html.Div(className="panel", children=[
            html.Div(className="panel-head", children=[
                html.Span("Flink jobs", className="panel-title"),
                html.A("Open Flink UI ↗", id="flink-ui-link", href=settings.flink.rest_url, target="_blank",
                       className="link", **testid("flink-ui-link")),
            ]),
            html.Div(id="health-cluster", className="note", **testid("health-cluster")),
            html.Div(id="health-jobs", **testid("health-jobs")),
            html.Div("Kafka consumer lag: the dashboard never reads Kafka. The lag column is the Kafka "
                     "source's own pendingRecords metric from Flink's REST API, where Flink reports it "
                     "(— otherwise).", className="note small"),
        ]),
        html.Div(className="panel", children=[
            html.Div(html.Span("Late and bad records (PostgreSQL)", className="panel-title"),
                     className="panel-head"),
            html.Div(id="health-pipeline", **testid("health-pipeline")),
        ]),
    ])


def layout(settings: Settings) -> html.Div:
    return html.Div(id="app", className="app", children=[
        dcc.Store(id="context", data=None),
        dcc.Interval(id="tick", interval=settings.dashboard.refresh_seconds * 1000, n_intervals=0),
        html.Header(className="topbar", children=[
            html.Div([html.Span("◆", className="logo-mark"), html.Span("MarketPulse", className="logo"),
                      html.Span("real-time market analytics", className="tagline")], className="brand"),
            html.Div(id="status-pills", className="pills", **testid("status-pills")),
        ]),
        html.Div(id="banner", className="banner hidden", **testid("banner")),
        alerts_strip.layout(settings),
        controls(settings),
        html.Div(id="range-label", className="range-label", **testid("range-label")),
        dcc.Tabs(id="tabs", value="overview", className="tabs",
                 children=[dcc.Tab(label=VIEW_LABELS[v], value=v, id=f"tab-{v}") for v in VIEWS]),
        html.Main(className="views", children=[
            overview_view(), symbol_view(), anomalies_view(), health_view(settings)]),
    ])


# --- formatting helpers --------------------------------------------------------------------------

def fmt_time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def fmt_age(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def fmt_price(value) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:,.2f}"


def fmt_change(value) -> html.Span:
    if value is None or pd.isna(value):
        return html.Span("—", className="muted")
    arrow = "▲" if value > 0 else "▼" if value < 0 else "•"
    return html.Span(f"{arrow} {value:+.2f}%", className="up" if value >= 0 else "down")


def parse_context(context: dict | None):
    if not context:
        return None
    start = datetime.fromisoformat(context["start"]) if context.get("start") else None
    end = datetime.fromisoformat(context["end"]) if context.get("end") else None
    return queries.TimeWindow(start, end, context["anchor"], context["range"])


# --- app -----------------------------------------------------------------------------------------

def create_app(settings: Settings | None = None, db: Database | None = None,
               flink: FlinkClient | None = None) -> dash.Dash:
    settings = settings or load_settings()
    db = db or Database(postgres_dsn(settings))
    flink = flink or FlinkClient(settings.flink.rest_url)
    app = dash.Dash(__name__, title="MarketPulse", update_title=None,
                    suppress_callback_exceptions=False)
    app.layout = layout(settings)
    app.server.config["MARKETPULSE_DB"] = db
    api.register(app.server, db, flink)
    alerts_strip.register(app, db, settings)
    pg = settings.postgres
    where = f"{pg.host}:{pg.port}/{pg.database}"

    app.clientside_callback(
        """function(tab) {
            return ["overview", "symbol", "anomalies", "health"].map(
                v => ({display: v === tab ? "block" : "none"}));
        }""",
        [Output(f"view-{v}", "style") for v in VIEWS], Input("tabs", "value"))

    @app.callback(Output("tick", "interval"), Output("tick", "disabled"), Input("refresh-select", "value"))
    def set_refresh(seconds):
        if not seconds:
            return no_update, True
        return int(seconds) * 1000, False

    @app.callback(
        Output("context", "data"), Output("banner", "children"), Output("banner", "className"),
        Output("range-label", "children"), Output("engine-select", "options"),
        Output("window-select", "options"), Output("symbol-select", "options"),
        Output("anomaly-symbol-filter", "options"), Output("status-pills", "children"),
        Input("tick", "n_intervals"), Input("range-select", "value"), Input("anchor-select", "value"),
        Input("engine-select", "value"), Input("window-select", "value"))
    def update_context(_tick, range_key, anchor, engine, window_seconds):
        sizes = sorted({settings.windows.size_seconds, settings.windows.short_size_seconds}, reverse=True)
        now = datetime.now(UTC)
        try:
            available = queries.series(db)
            known = queries.symbols(db)
        except DatabaseUnavailable as err:
            context = {"db_ok": False, "error": str(err), "start": None, "end": None, "anchor": anchor,
                       "range": range_key, "engine": engine, "window": window_seconds, "has_data": False}
            banner = [html.Strong("Database unreachable. "),
                      f"PostgreSQL at {where} does not answer ({err}). "
                      f"Charts are empty; the page retries on every refresh and recovers by itself."]
            return (context, banner, "banner error", "No data: the database is unreachable.",
                    engine_options(None, sizes), window_options(None, engine, sizes), [], [],
                    pills(False, None))
        present = {(row.engine, int(row.window_seconds)): row for row in available.itertuples()}
        row = present.get((engine, int(window_seconds)))
        earliest = row.earliest_start.to_pydatetime() if row is not None else None
        latest = row.latest_end.to_pydatetime() if row is not None else None
        window = queries.resolve_window(range_key, anchor, earliest, latest, now)
        context = {"db_ok": True, "error": None, "anchor": anchor, "range": range_key, "engine": engine,
                   "window": int(window_seconds), "has_data": row is not None,
                   "start": window.start.isoformat() if window.start else None,
                   "end": window.end.isoformat() if window.end else None,
                   "latest": latest.isoformat() if latest else None}
        banner, banner_class = None, "banner hidden"
        if not present:
            banner = [html.Strong("No data yet. "),
                      f"The database {where} is reachable but window_metrics is empty. Start the trade "
                      "generator and the Flink jobs; this page fills in by itself as windows arrive."]
            banner_class = "banner warn"
        elif row is None:
            others = ", ".join(f"{ENGINE_LABELS.get(e, e)} {s} s" for e, s in sorted(present))
            banner = [html.Strong("No rows for this selection. "),
                      f"{ENGINE_LABELS.get(engine, engine)} has no {window_seconds} s windows; "
                      f"data exists for: {others}."]
            banner_class = "banner warn"
        symbol_options = [{"label": f"{r.symbol} · {r.company}" if r.company else r.symbol, "value": r.symbol}
                          for r in known.itertuples()]
        return (context, banner, banner_class, range_text(window, latest, now),
                engine_options(present, sizes), window_options(present, engine, sizes),
                symbol_options, [{"label": o["value"], "value": o["value"]} for o in symbol_options],
                pills(True, present))

    def engine_options(present, sizes):
        return [{"label": ENGINE_LABELS[e], "value": e,
                 "disabled": present is not None and bool(present) and not any(k[0] == e for k in present)}
                for e in queries.ENGINES]

    def window_options(present, engine, sizes):
        return [{"label": f"{s} s", "value": s,
                 "disabled": present is not None and bool(present) and (engine, s) not in present}
                for s in sizes]

    def range_text(window: queries.TimeWindow, latest: datetime | None, now: datetime):
        if window.start is None:
            return "No windows for this selection yet."
        span = queries.RANGE_LABELS[window.range_key]
        what = "all" if window.range_key == "all" else f"last {span}"
        parts = [html.Span(f"{fmt_time(window.start)} → {fmt_time(window.end)} UTC", className="range-times")]
        if window.anchor == "latest":
            parts.insert(0, html.Span(f"{what} of data", className="range-anchor",
                                      **testid("range-anchor")))
            lag = (now - latest).total_seconds() if latest else 0
            if lag > 120:
                parts.append(html.Span(f"latest window ended {fmt_age(lag)} ago — historical data",
                                       className="range-stale", **testid("range-stale")))
            else:
                parts.append(html.Span("live", className="range-live"))
        else:
            parts.insert(0, html.Span(f"{what} up to now", className="range-anchor",
                                      **testid("range-anchor")))
            if latest is not None and window.start and latest < window.start:
                age = fmt_age((now - latest).total_seconds())
                parts.append(html.Span(f"no data this recent: latest window ended {age}"
                                       " ago — switch to 'latest data'", className="range-stale",
                                       **testid("range-stale")))
        return parts

    def pills(db_ok: bool, present):
        health = flink.health()
        running = sum(1 for job in health.jobs if job.state == "RUNNING")
        return [
            html.Span("PostgreSQL ✓" if db_ok else "PostgreSQL ✗",
                      className="pill ok" if db_ok else "pill bad",
                      **testid("pill-db")),
            html.Span(f"Flink ✓ {running} running" if health.ok else "Flink ✗ unreachable",
                      className="pill ok" if health.ok else "pill bad", **testid("pill-flink")),
        ]

    @app.callback(
        *[Output(f"card-{key}-value", "children") for key, _ in CARDS],
        Output("watchlist", "children"), Output("volume-share-graph", "figure"),
        Output("top-movers-graph", "figure"),
        Input("context", "data"), Input("tabs", "value"))
    def render_overview(context, tab):
        if tab != "overview" or context is None:
            return (no_update,) * (len(CARDS) + 3)
        if not context["db_ok"]:
            empty = figures.empty_figure("Database unreachable", 300)
            return (*("—",) * len(CARDS), empty_watchlist("Database unreachable"), empty, empty)
        window = parse_context(context)
        try:
            data = queries.overview(db, context["engine"], context["window"], window)
        except DatabaseUnavailable:
            empty = figures.empty_figure("Database unreachable", 300)
            return (*("—",) * len(CARDS), empty_watchlist("Database unreachable"), empty, empty)
        movers, movers_title = data.watchlist, "Top movers (% change over range)"
        try:
            sql_movers = queries.sql_top_movers(db, context["window"], window.start, window.end)
        except DatabaseUnavailable:
            sql_movers = pd.DataFrame()
        if not sql_movers.empty:
            ends = sql_movers["window_end"].iloc[0]
            movers = sql_movers
            movers_title = f"Top movers · Flink SQL, {context['window']} s window ending {ends:%H:%M:%S}"
        t = data.totals
        cards = (f"{t['trades']:,}", figures.human(t["volume"]), figures.human(t["notional"], "$"),
                 f"{t['symbols']:,}", f"{t['anomalies']:,}")
        return (*cards, watchlist_table(data), figures.volume_share_figure(data.watchlist),
                figures.top_movers_figure(movers, title=movers_title))

    def empty_watchlist(message: str):
        return html.Div(message, className="empty", **testid("watchlist-empty"))

    def watchlist_table(data: queries.Overview):
        if data.watchlist.empty:
            return empty_watchlist("No windows in this range")
        head = html.Thead(html.Tr([html.Th(h) for h in (
            "Symbol", "Company", "Last", "% chg", "VWAP", "Volume", "Trend", "Anomalies")]))
        rows = []
        for r in data.watchlist.itertuples():
            badge = (html.Span(f"{r.anomalies}", className="badge hot", **testid("anomaly-badge"))
                     if r.anomalies else html.Span("0", className="badge"))
            rows.append(html.Tr(
                id={"type": "watch-row", "symbol": r.symbol}, className="click-row", n_clicks=0,
                **{"data-testid": "watch-row", "data-symbol": r.symbol},
                children=[
                    html.Td(r.symbol, className="sym"), html.Td(r.company, className="company"),
                    html.Td(fmt_price(r.last_close), className="num"), html.Td(fmt_change(r.change_pct),
                                                                               className="num"),
                    html.Td(fmt_price(r.vwap), className="num"),
                    html.Td(figures.human(r.volume), className="num"),
                    html.Td(html.Img(src=figures.sparkline_svg(data.sparklines.get(r.symbol, [])),
                                     className="spark", alt=f"{r.symbol} trend")),
                    html.Td(badge, className="num")]))
        return html.Table([head, html.Tbody(rows)], className="data-table", id="watchlist-table")

    @app.callback(
        Output("candles-graph", "figure"), Output("symbol-header", "children"),
        Output("symbol-note", "children"),
        Input("context", "data"), Input("symbol-select", "value"), Input("tabs", "value"))
    def render_symbol(context, symbol, tab):
        if tab != "symbol" or context is None:
            return no_update, no_update, no_update
        if not context["db_ok"]:
            return figures.empty_figure("Database unreachable", 660), symbol or "", ""
        if not symbol:
            return figures.empty_figure("No symbols yet", 660), "", ""
        window = parse_context(context)
        engine, seconds = context["engine"], context["window"]
        try:
            frame, truncated = queries.candles(db, engine, seconds, symbol, window.start, window.end)
            marks, bands = pd.DataFrame(), pd.DataFrame()
            if not frame.empty:
                first = frame["window_start"].iloc[0].to_pydatetime()
                marks = queries.anomalies(db, symbol=symbol, start=first, end=window.end, limit=5000)
                bands = queries.indicators(db, symbol, seconds, first, window.end)
        except DatabaseUnavailable:
            return figures.empty_figure("Database unreachable", 660), symbol, ""
        fig = figures.candlestick_figure(frame, marks, symbol=symbol, window_seconds=seconds,
                                         indicators=bands if not bands.empty else None)
        header = symbol_header(symbol, frame)
        note = []
        if truncated:
            note.append(f"Showing the latest {queries.MAX_CANDLES:,} windows of this range; pick a shorter "
                        f"range or larger windows to see all of it. ")
        source = ("SMA, Bollinger bands and RSI from the Flink SQL job's indicators table" if not bands.empty
                  else "bottom panel: z-score computed by the dashboard from the candles shown (no Flink SQL "
                       f"indicators for {seconds} s bars)")
        note.append(f"{len(frame):,} candles · {len(marks):,} anomalies · engine "
                    f"{ENGINE_LABELS.get(engine, engine)} · {source}")
        return fig, header, note

    def symbol_header(symbol: str, frame: pd.DataFrame):
        parts = [html.Span(symbol, className="sym-big", **testid("symbol-title"))]
        if not frame.empty:
            last, first = frame["close"].iloc[-1], frame["open"].iloc[0]
            parts += [html.Span(fmt_price(last), className="price-big"),
                      fmt_change((last / first - 1) * 100 if first else None),
                      html.Span(f"VWAP {fmt_price(frame['notional'].sum() / frame['volume'].sum())}"
                                if frame["volume"].sum() else "", className="muted"),
                      html.Span(f"H {fmt_price(frame['high'].max())} · L {fmt_price(frame['low'].min())}",
                                className="muted")]
        return parts

    @app.callback(
        Output("anomaly-table", "children"), Output("anomaly-timeline-graph", "figure"),
        Output("anomaly-count", "children"),
        Input("context", "data"), Input("anomaly-symbol-filter", "value"),
        Input("anomaly-rule-filter", "value"), Input("tabs", "value"))
    def render_anomalies(context, symbol, rule, tab):
        if tab != "anomalies" or context is None:
            return no_update, no_update, no_update
        down = (empty_rows("Database unreachable"), figures.empty_figure("Database unreachable", 260),
                "Database unreachable")
        if not context["db_ok"]:
            return down
        window = parse_context(context)
        try:
            frame = queries.anomalies(db, symbol=symbol, rule=rule, start=window.start, end=window.end,
                                      limit=ANOMALY_ROWS)
            timeline, step = pd.DataFrame(), None
            if window.start is not None:
                step = queries.bucket_seconds(window.seconds, 1, points=60)
                timeline = queries.anomaly_timeline(db, window.start, window.end, step, symbol, rule)
        except DatabaseUnavailable:
            return down
        total = int(timeline["anomalies"].sum()) if not timeline.empty else len(frame)
        shown = f"newest {len(frame):,} shown" if total > len(frame) else f"{len(frame):,} shown"
        span = (window.start, window.end) if window.start is not None else None
        return (anomaly_table(frame), figures.anomaly_timeline_figure(timeline, step, span),
                f"{total:,} in range · {shown} · click a row to open the symbol")

    def empty_rows(message: str):
        return html.Div(message, className="empty", **testid("anomaly-empty"))

    def anomaly_table(frame: pd.DataFrame):
        if frame.empty:
            return empty_rows("No anomalies match these filters in this range")
        head = html.Thead(html.Tr([html.Th(h) for h in (
            "Time (UTC)", "Symbol", "Rule", "Price", "Size", "Statistic", "Mean", "Stddev", "Trade")]))

        def num(value, digits):
            return "—" if value is None or pd.isna(value) else f"{value:,.{digits}f}"

        rows = [html.Tr(
            id={"type": "anomaly-row", "symbol": r["symbol"], "key": f"{r['trade_id']}|{r['rule']}"},
            n_clicks=0, className="click-row",
            **{"data-testid": "anomaly-row", "data-symbol": r["symbol"], "data-rule": r["rule"]},
            children=[html.Td(fmt_time(r["event_time"])), html.Td(r["symbol"], className="sym"),
                      html.Td(r["rule"], className=f"rule rule-{r['rule']}"),
                      html.Td(num(r["price"], 2), className="num"),
                      html.Td(num(r["size"], 0), className="num"),
                      html.Td(num(r["z_score"], 2), className="num"),
                      html.Td(num(r["mean"], 2), className="num"),
                      html.Td(num(r["stddev"], 4), className="num"),
                      html.Td(r["trade_id"], className="muted mono")])
            for r in frame.to_dict("records")]
        return html.Table([head, html.Tbody(rows)], className="data-table")

    @app.callback(
        Output("health-cluster", "children"), Output("health-jobs", "children"),
        Output("health-pipeline", "children"),
        Input("tick", "n_intervals"), Input("tabs", "value"), Input("context", "data"))
    def render_health(_tick, tab, context):
        if tab != "health":
            return no_update, no_update, no_update
        health = flink.health()
        if not health.ok:
            cluster = html.Span(f"Flink REST API unreachable: {health.error}", className="down")
            jobs = html.Div("No job information.", className="empty", **testid("jobs-empty"))
        else:
            cluster = (f"Flink {health.flink_version} · {health.taskmanagers} TaskManager(s) · "
                       f"{health.slots_available}/{health.slots_total} slots free · "
                       f"{len(health.jobs)} job(s) listed")
            jobs = jobs_table(health)
        return cluster, jobs, pipeline_panel(context)

    def rate(value: float | None) -> str:
        return "—" if value is None else f"{value:,.1f}"

    def jobs_table(health):
        if not health.jobs:
            return html.Div("The cluster lists no jobs.", className="empty", **testid("jobs-empty"))
        head = html.Thead(html.Tr([html.Th(h) for h in (
            "Job", "State", "Uptime", "In /s", "Out /s", "Kafka lag", "Backpressure", "Last checkpoint")]))
        rows = []
        now_ms = datetime.now(UTC).timestamp() * 1000
        for job in health.jobs:
            cp = job.last_checkpoint
            checkpoint = "—"
            if cp:
                age = fmt_age((now_ms - cp.finished_at_ms) / 1000) if cp.finished_at_ms else "?"
                checkpoint = f"#{cp.id} {age} ago · {cp.duration_ms or 0} ms"
            elif job.state == "RUNNING":
                checkpoint = "none yet"
            rows.append(html.Tr(**{"data-testid": "job-row", "data-job-id": job.id, "data-state": job.state},
                                children=[
                html.Td([html.Div(job.name, className="job-name"), html.Div(job.id, className="job-id")]),
                html.Td(html.Span(job.state, className=f"state state-{job.state.lower()}")),
                html.Td(fmt_age(job.duration_ms / 1000) if job.state == "RUNNING" else
                        f"ran {fmt_age(job.duration_ms / 1000)}"),
                html.Td(rate(job.records_in_per_s), className="num"),
                html.Td(rate(job.records_out_per_s), className="num"),
                html.Td("—" if job.pending_records is None else f"{job.pending_records:,.0f}",
                        className="num"),
                html.Td(html.Span(job.backpressure or "—",
                                  className=f"bp bp-{job.backpressure}" if job.backpressure else "muted")),
                html.Td(checkpoint)]))
        return html.Table([head, html.Tbody(rows)], className="data-table")

    def pipeline_panel(context):
        window = parse_context(context) if context else None
        try:
            counts = queries.pipeline_counts(db, window.start if window else None,
                                             window.end if window else None)
            reasons = queries.dead_letter_reasons(db)
        except DatabaseUnavailable:
            return html.Div("Database unreachable", className="empty")
        cells = []
        for kind, label in (("late_trades", "Late trades"), ("dead_letters", "Dead letters (bad records)")):
            part = counts[counts["kind"] == kind]
            total = int(part["total"].sum()) if not part.empty else 0
            in_range = int(part["in_range"].sum()) if not part.empty else 0
            detail = ", ".join(f"{ENGINE_LABELS.get(r.engine, r.engine)} {int(r.total):,}"
                               for r in part.itertuples()) or "none recorded"
            cells.append(html.Div(className="card", **testid(f"pipeline-{kind}"), children=[
                html.Div(label, className="card-label"),
                html.Div(f"{total:,}", className="card-value", **testid(f"pipeline-{kind}-total")),
                html.Div(f"{in_range:,} in the selected range · {detail}", className="card-sub")]))
        reason_list = html.Ul([html.Li(f"{r.reason} — {int(r.records):,}") for r in reasons.itertuples()],
                              className="reasons") if not reasons.empty else None
        return html.Div([html.Div(cells, className="cards"),
                         html.Div([html.Div("Top dead-letter reasons", className="card-label"), reason_list])
                         if reason_list else None])

    @app.callback(
        Output("symbol-select", "value"), Output("tabs", "value"),
        Input("symbol-select", "options"), Input({"type": "watch-row", "symbol": ALL}, "n_clicks"),
        Input({"type": "anomaly-row", "symbol": ALL, "key": ALL}, "n_clicks"),
        State("symbol-select", "value"))
    def choose_symbol(options, _watch_clicks, _anomaly_clicks, current):
        """Keeps a valid symbol selected; a click on a watchlist or anomaly row opens that symbol."""
        # Rows re-rendered on refresh come back with n_clicks=0: only a row with clicks is a click (and the
        # options may trigger in the same round, so look at each triggered row, not at triggered_id).
        for triggered in dash.ctx.triggered:
            prop_id, value = triggered.get("prop_id", ""), triggered.get("value")
            if prop_id.startswith("{") and value:
                return json.loads(prop_id.rsplit(".", 1)[0])["symbol"], "symbol"
        values = [o["value"] for o in options or []]
        if current in values:
            return no_update, no_update
        return (values[0] if values else None), no_update

    return app


def main() -> None:
    settings = load_settings()
    app = create_app(settings)
    app.run(host=settings.dashboard.host, port=settings.dashboard.port, debug=False)
