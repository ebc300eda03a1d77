"""The dashboard load benchmark's pure parts (bench/lib/load.py), gunicorn's settings (dashboard/serve.py) and
the response cache (dashboard/cache.py): callback payloads built from the real app's layout and callback map
are ones Dash accepts, the request mix, percentiles, the fill's rows and span; cache keys, expiry, single
flight."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from bench.lib import load
from dashboard.db import Database
from dashboard.health import FlinkClient
from marketpulse.config import load_settings

# Nothing listens on port 1: the app's database and Flink are unreachable at once (no stack needed).
ENV = {"MARKETPULSE_POSTGRES_PORT": "1", "MARKETPULSE_FLINK_REST_URL": "http://127.0.0.1:1"}


def test_outputs_as_the_renderer_sends_them():
    assert load.outputs("alert-strip-items.children") == {"id": "alert-strip-items", "property": "children"}
    assert load.outputs("..context.data...banner.className..") == [
        {"id": "context", "property": "data"}, {"id": "banner", "property": "className"}]


def test_layout_props_walks_the_tree():
    layout = {"type": "Div", "props": {"id": "app", "children": [
        {"type": "Store", "props": {"id": "context", "data": None}},
        {"type": "Div",
         "props": {"children": {"type": "RadioItems", "props": {"id": "range", "value": "15m"}}}},
        "text"]}}
    props = load.layout_props(layout)
    assert sorted(props) == ["app", "context", "range"]
    assert props["range"]["value"] == "15m"


def test_payloads_from_the_apps_own_maps_are_accepted():
    from dashboard.app import create_app

    settings = load_settings(environ=ENV)
    app = create_app(settings, db=Database("host=127.0.0.1 port=1 dbname=x user=x", connect_timeout=1),
                     flink=FlinkClient(settings.flink.rest_url))
    client = app.server.test_client()
    props = load.layout_props(client.get("/_dash-layout").get_json())
    dependencies = client.get("/_dash-dependencies").get_json()
    dep = load.find_callback(dependencies, load.CONTEXT)
    values = {f"{item['id']}.{item['property']}": props.get(item["id"], {}).get(item["property"])
              for item in [*dep["inputs"], *dep["state"]]}
    response = client.post("/_dash-update-component", json=load.payload(dep, values, ["tick.n_intervals"]))
    assert response.status_code == 200
    answer = response.get_json()["response"]
    assert answer["context"]["data"]["db_ok"] is False  # port 1: the banner says the database is down
    assert answer["banner"]["className"] == "banner error"
    for output in load.TICK_CALLBACKS:
        assert load.find_callback(dependencies, output)["output"]
    with pytest.raises(LookupError):
        load.find_callback(dependencies, "nowhere.children")


def test_plans_spread_views_and_ranges():
    plans = load.plans(20, ["A", "B", "C"])
    assert {p.tab for p in plans} == set(load.VIEWS)
    assert {p.range_key for p in plans} == set(load.RANGES)
    assert {(p.tab, p.range_key) for p in plans} and len({(p.tab, p.range_key) for p in plans}) == 20
    assert [p.symbol for p in plans[:4]] == ["A", "B", "C", "A"]


def test_api_probability_gives_the_share_of_requests():
    for share in (0.0, 0.25, 0.5, 1.0):
        p = load.api_probability(share, tick_requests=7)
        assert p / (p + (1 - p) * 7) == pytest.approx(share)
    with pytest.raises(ValueError):
        load.api_probability(1.5)
    assert load.api_per_tick(0.5, tick_requests=7) == 7
    assert load.api_per_tick(0.0) == 0
    paths = {load.api_paths(["AAPL"], random.Random(seed)).split("?")[0] for seed in range(200)}
    assert paths == {"/api/metrics", "/api/anomalies", "/api/symbols", "/api/health"}


def test_percentile_and_summary():
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert load.percentile(values, 50) == 0.050
    assert load.percentile(values, 95) == 0.095
    assert load.percentile(values, 99) == 0.099
    assert load.percentile([0.2], 99) == 0.2
    summary = load.summarize("x", reversed(values), errors=2, seconds=10)
    assert (summary.requests, summary.errors, summary.rate) == (100, 2, 10.0)
    assert (summary.p50_ms, summary.p95_ms, summary.p99_ms) == pytest.approx((50, 95, 99))


def test_fill_span_and_rows():
    before = datetime(2026, 12, 5, 5, 42, 17, tzinfo=UTC)
    start, end = load.fill_span(1_000_000, 10, 60, before)
    assert end == datetime(2026, 12, 5, 5, tzinfo=UTC)
    assert (end - start) == timedelta(minutes=100_000)  # ~69.4 days
    frame = load.fill_frame(["A", "B"], "datastream", 60, end - timedelta(minutes=30), end)
    assert len(frame) == 60 and frame["window_start"].max() == end - timedelta(minutes=1)
    assert ((frame["high"] >= frame[["open", "close"]].max(axis=1))
            & (frame["low"] <= frame[["open", "close"]].min(axis=1))).all()
    assert (frame["buy_count"] + frame["sell_count"] == frame["trade_count"]).all()
    assert frame["notional"].to_numpy() == pytest.approx((frame["vwap"] * frame["volume"]).to_numpy())


def test_gunicorn_options_come_from_the_dashboard_section():
    from dashboard.serve import options

    config = options(load_settings(environ={"MARKETPULSE_DASHBOARD_WORKERS": "3",
                                            "MARKETPULSE_DASHBOARD_THREADS": "6",
                                            "MARKETPULSE_DASHBOARD_PORT": "9999"}))
    assert (config["bind"], config["workers"], config["threads"], config["worker_class"]) == (
        "127.0.0.1:9999", 3, 6, "gthread")
    with pytest.raises(ValueError, match="at least 1"):
        options(load_settings(environ={"MARKETPULSE_DASHBOARD_WORKERS": "0"}))


def test_callback_key_ignores_the_tick_counters_only():
    from dashboard.cache import callback_key, request_key

    def body(tick, range_key, changed=("tick.n_intervals",)):
        return json.dumps({"output": "..context.data..", "inputs": [
            {"id": "tick", "property": "n_intervals", "value": tick},
            {"id": "range-select", "property": "value", "value": range_key}],
            "state": [], "changedPropIds": list(changed)}).encode()

    assert callback_key(body(3, "1h")) == callback_key(body(70, "1h"))
    assert callback_key(body(3, "1h")) != callback_key(body(3, "15m"))
    assert callback_key(body(3, "1h")) != callback_key(body(3, "1h", changed=("range-select.value",)))
    assert callback_key(b"not json") is None and callback_key(b"[1]") is None
    assert request_key("GET", "/api/metrics", b"symbol=AAPL", bytes) == "GET /api/metrics?symbol=AAPL"
    assert request_key("GET", "/api/health", b"", bytes) is None
    assert request_key("GET", "/", b"", bytes) is None
    assert request_key("POST", "/_dash-update-component", b"", lambda: body(1, "5m")) == callback_key(
        body(9, "5m"))


def test_response_cache_expires_and_computes_once():
    from dashboard.cache import ResponseCache

    now = [0.0]
    cache = ResponseCache(1.0, max_entries=2, clock=lambda: now[0])
    assert cache.claim("a") is None  # the caller computes it
    cache.put("a", "A")
    assert cache.claim("a") == "A"
    now[0] = 0.99
    assert cache.claim("a") == "A"
    now[0] = 1.0
    assert cache.claim("a") is None  # expired: computed again
    cache.put("a", "A2")
    for key in ("b", "c"):
        assert cache.claim(key) is None
        cache.put(key, key.upper())
    assert cache.claim("a") is None  # the oldest of three went out (max_entries=2)
    cache.release("a")

    # Single flight: while one thread computes "k", the others wait and get its value.
    cache = ResponseCache(10.0)
    assert cache.claim("k") is None
    results = []
    waiters = [threading.Thread(target=lambda: results.append(cache.claim("k"))) for _ in range(5)]
    for thread in waiters:
        thread.start()
    time.sleep(0.05)
    assert results == []
    cache.put("k", "K")
    for thread in waiters:
        thread.join(5)
    assert results == ["K"] * 5
    # A computing thread that fails releases the key: the next caller computes it.
    assert cache.claim("x") is None
    cache.release("x")
    assert cache.claim("x") is None
    cache.release("x")

    # get(): computes once per fresh value; a failing compute stores nothing and raises to its caller.
    calls = []
    assert cache.get("g", lambda: calls.append(1) or "G") == "G"
    assert cache.get("g", lambda: calls.append(1) or "other") == "G"
    assert calls == [1]

    def fails():
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        cache.get("f", fails)
    assert cache.get("f", lambda: "F") == "F"
