"""The page around the views: top bar with status pills, banner, alert strip, the controls, the tabs, and the
three callbacks every view depends on:

- `update_context`, on every refresh tick and control change: checks the database, finds which
  (engine, window size) series exist and stores the resolved ViewContext (dashboard.context) in `context`;
- `route`, which keeps the URL and the controls in step both ways (dashboard.urls): a reload, a shared
  link, Back/Forward or a row's link sets the view, symbol, filters and range; a control change updates
  the URL;
- the tab switch (client side) and the refresh interval."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dash
from dash import Input, Output, State, dcc, html, no_update

from dashboard import alerts_strip, context, queries, urls
from dashboard.db import DatabaseUnavailable
from dashboard.ui import control, testid
from dashboard.views import Deps

REFRESH_CHOICES = (1, 2, 5, 10)
ROUTED = (("tabs", "value", "view"), ("symbol-select", "value", "symbol"),
          ("anomaly-rule-filter", "value", "rule"), ("anomaly-symbol-filter", "value", "filter_symbol"),
          ("range-select", "value", "range_key"), ("anchor-select", "value", "anchor"),
          ("engine-select", "value", "engine"), ("window-select", "value", "window_seconds"))


def window_sizes(settings) -> list[int]:
    return sorted({settings.windows.size_seconds, settings.windows.short_size_seconds}, reverse=True)


def segmented(component_id: str, value, options: list[dict]) -> dcc.RadioItems:
    return dcc.RadioItems(id=component_id, value=value, inline=True, className="segmented", options=options)


def controls(settings) -> html.Div:
    refresh = settings.dashboard.refresh_seconds
    defaults = urls.Route()
    return html.Div(className="controls", children=[
        control("Symbol", dcc.Dropdown(id="symbol-select", options=[], value=None, clearable=False,
                                       placeholder="no symbols yet", className="dropdown symbol-dropdown"),
                "control-symbol"),
        control("Range", segmented("range-select", defaults.range_key,
                                   [{"label": queries.RANGE_LABELS[k], "value": k} for k in queries.RANGES]),
                "control-range"),
        control("Relative to", segmented("anchor-select", defaults.anchor, [
            {"label": "latest data", "value": "latest"}, {"label": "now", "value": "now"}]),
                "control-anchor"),
        control("Engine", segmented("engine-select", defaults.engine, context.engine_options(None)),
                "control-engine"),
        control("Window", segmented("window-select", settings.windows.size_seconds,
                                    context.window_options(None, defaults.engine, window_sizes(settings))),
                "control-window"),
        control("Refresh", dcc.Dropdown(
            id="refresh-select", value=refresh, clearable=False, searchable=False,
            className="dropdown refresh-dropdown",
            options=[{"label": f"every {s} s", "value": s} for s in sorted(set(REFRESH_CHOICES) | {refresh})]
            + [{"label": "paused", "value": 0}]), "control-refresh"),
    ])


def layout(deps: Deps, views) -> html.Div:
    settings = deps.settings
    return html.Div(id="app", className="app", children=[
        dcc.Location(id="url", refresh="callback-nav"),
        dcc.Store(id="routed-url", data=None),  # the URL the controls last matched (see route)
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
        dcc.Tabs(id="tabs", value=views[0].NAME, className="tabs",
                 children=[dcc.Tab(label=v.LABEL, value=v.NAME, id=f"tab-{v.NAME}") for v in views]),
        html.Main(className="views", children=[v.layout(deps) for v in views]),
    ])


def changed(new, old):
    """Only what differs is written back: writing a control's own value would re-render every view."""
    return no_update if new == old else new


def register(app: dash.Dash, deps: Deps, views) -> None:
    settings, db = deps.settings, deps.db
    sizes = window_sizes(settings)
    pg = settings.postgres
    where = f"{pg.host}:{pg.port}/{pg.database}"
    names = json.dumps([v.NAME for v in views])

    app.clientside_callback(
        f"function(tab) {{ return {names}.map(v => ({{display: v === tab ? 'block' : 'none'}})); }}",
        [Output(f"view-{v.NAME}", "style") for v in views], Input("tabs", "value"))

    @app.callback(Output("tick", "interval"), Output("tick", "disabled"), Input("refresh-select", "value"))
    def set_refresh(seconds):
        return (no_update, True) if not seconds else (int(seconds) * 1000, False)

    @app.callback(
        Output("context", "data"), Output("banner", "children"), Output("banner", "className"),
        Output("range-label", "children"), Output("engine-select", "options"),
        Output("window-select", "options"), Output("symbol-select", "options"),
        Output("anomaly-symbol-filter", "options"), Output("status-pills", "children"),
        Input("tick", "n_intervals"), Input("range-select", "value"), Input("anchor-select", "value"),
        Input("engine-select", "value"), Input("window-select", "value"),
        State("engine-select", "options"), State("window-select", "options"),
        State("symbol-select", "options"))
    def update_context(_tick, range_key, anchor, engine, window_seconds, *shown_options):
        now = datetime.now(UTC)
        deps.monitor.latest()  # a server's first call starts the background check; read again below
        try:
            present = context.present_series(queries.series(db))
            known = context.symbol_options(queries.symbols(db))
            resolved = context.resolve(present, range_key, anchor, engine, window_seconds, now)
        except DatabaseUnavailable as err:
            present, known = None, []
            resolved = context.unreachable(str(err), range_key, anchor, engine, window_seconds)
        banner, banner_class = context.banner(resolved, present or {}, where)
        if resolved.db_ok and banner is None:
            try:
                closed = context.market_banner(queries.market_status(db))
            except DatabaseUnavailable:
                closed = None
            banner, banner_class = (closed, "banner info") if closed else (banner, banner_class)
        options = (context.engine_options(present), context.window_options(present, engine, sizes), known)
        # Options are written only when they change: each write re-runs the routing callback, which could
        # then race with a click on a row.
        engines, windows, symbols = map(changed, options, shown_options)
        filter_symbols = no_update if symbols is no_update else [
            {"label": o["value"], "value": o["value"]} for o in known]
        # Read after the queries: on a server's first call the check started above has usually answered by
        # now (a healthy Flink: tens of ms), so the first page shows Flink's state, not "checking".
        health = deps.monitor.latest()
        return (resolved.to_store(), banner, banner_class, context.range_text(resolved, now), engines,
                windows, symbols, filter_symbols, context.pills(resolved.db_ok, health))

    @app.callback(
        Output("url", "pathname"), Output("url", "search"), Output("routed-url", "data"),
        *[Output(cid, prop) for cid, prop, _ in ROUTED],
        Input("url", "pathname"), Input("url", "search"), *[Input(cid, prop) for cid, prop, _ in ROUTED],
        Input("symbol-select", "options"), State("routed-url", "data"))
    def route(pathname, search, *values):
        *shown, options, routed = values
        controls = urls.Route(**{name: value for (_, _, name), value in zip(ROUTED, shown, strict=True)})
        from_url = urls.parse(pathname, search, tuple(sizes)).with_defaults(settings.windows.size_seconds)
        address = (pathname or "/") + (search or "")
        triggered = {item["prop_id"] for item in dash.ctx.triggered}
        # The address moved by itself (load, back/forward) when it is not the one the controls last matched;
        # the Location reporting the same address again after load is no move.
        url_moved = address != routed and (dash.ctx.triggered_id is None or bool(
            triggered & {"url.pathname", "url.search"}))
        acted = {name for cid, prop, name in ROUTED if f"{cid}.{prop}" in triggered}
        first = next((o["value"] for o in options or []), None)
        wanted, write = urls.reconcile(from_url, controls, url_moved, acted, first)
        path, query = urls.to_url(wanted, settings.windows.size_seconds)
        url_outputs = (changed(path, pathname), changed(query, search or ""), changed(path + query, routed)) \
            if write else (no_update, no_update, changed(address, routed))
        return (*url_outputs, *(changed(getattr(wanted, name), old)
                                for (_, _, name), old in zip(ROUTED, shown, strict=True)))
