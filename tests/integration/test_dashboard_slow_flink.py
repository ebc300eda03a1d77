"""A slow Flink never slows the dashboard: with a Flink REST API that answers every call after 5 s, the
refresh callbacks (context + status pills, overview) answer at once, and the health view shows Flink's
answer once the background HealthMonitor has it. Real app (Flask test client posting Dash callback
requests) against a scratch database; Flink is a local HTTP stub."""

from __future__ import annotations

import json
import time

import pytest

from dashboard.app import create_app
from dashboard.health import FlinkClient
from tests import support

pytestmark = pytest.mark.integration

DELAY_S = 5.0
STUB_ANSWERS = {"/overview": {"flink-version": "stub-2.2", "taskmanagers": 1, "slots-total": 4,
                              "slots-available": 4},
                "/jobs/overview": {"jobs": []}}


def slow_answer(path: str) -> bytes:
    time.sleep(DELAY_S)
    return json.dumps(STUB_ANSWERS.get(path, {})).encode()


@pytest.fixture
def slow_flink():
    with support.http_stub(slow_answer) as url:
        yield url


def call(app, client, output_prefix: str, inputs: dict, changed: str):
    """POSTs one callback as the browser would; returns (seconds taken, {"id.prop": value})."""
    key = next(k for k in app.callback_map if k.startswith(output_prefix))
    spec = app.callback_map[key]
    outputs = [dict(zip(("id", "property"), part.rsplit(".", 1), strict=True))
               for part in key.strip(".").split("...")]
    payload = {"output": key, "outputs": outputs, "changedPropIds": [changed],
               "inputs": [dict(i, value=inputs[f"{i['id']}.{i['property']}"]) for i in spec["inputs"]],
               "state": [dict(s, value=inputs.get(f"{s['id']}.{s['property']}")) for s in spec["state"]]}
    started = time.monotonic()
    response = client.post("/_dash-update-component", json=payload)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.data[:500]
    answer = response.get_json()["response"]
    return elapsed, {f"{cid}.{prop}": value for cid, props in answer.items() for prop, value in props.items()}


def text(component) -> str:
    if isinstance(component, list):
        return " ".join(text(c) for c in component)
    if isinstance(component, dict):
        return text(component.get("props", {}).get("children"))
    return "" if component is None else str(component)


def test_a_flink_answering_after_5_s_does_not_slow_the_refresh(scratch_db, slow_flink):
    app = create_app(scratch_db, flink=FlinkClient(slow_flink, timeout=DELAY_S * 3))
    monitor = app.server.config["MARKETPULSE_DEPS"].monitor
    client = app.server.test_client()
    controls = {"tick.n_intervals": 0, "range-select.value": "15m", "anchor-select.value": "latest",
                "engine-select.value": "datastream", "window-select.value": scratch_db.windows.size_seconds}

    first_context_s, out = call(app, client, "..context.data", controls, "tick.n_intervals")
    assert "Flink … checking" in text(out["status-pills.children"])
    stored = out["context.data"]
    overview_s, out = call(app, client, "..card-trades-value",
                           {"context.data": stored, "tabs.value": "overview"}, "context.data")
    assert out["card-trades-value.children"] == "0"
    health_s, out = call(app, client, "..health-cluster",
                         {"tick.n_intervals": 1, "tabs.value": "health", "context.data": stored},
                         "tabs.value")
    assert "Asking Flink" in text(out["health-cluster.children"])

    started = time.monotonic()
    health = monitor.wait_first(DELAY_S * 6)
    background_s = time.monotonic() - started
    assert health is not None and health.ok and health.flink_version == "stub-2.2"
    # The monitor is fetching again (another 10 s of slow calls) while the page keeps refreshing.
    later_context_s, out = call(app, client, "..context.data", dict(controls, **{"tick.n_intervals": 2}),
                                "tick.n_intervals")
    assert "Flink ✓ 0 running" in text(out["status-pills.children"])
    later_health_s, out = call(app, client, "..health-cluster",
                               {"tick.n_intervals": 3, "tabs.value": "health", "context.data": stored},
                               "tick.n_intervals")
    assert "Flink stub-2.2 · 1 TaskManager(s)" in text(out["health-cluster.children"])
    monitor.stop()

    print(f"\nFlink answers each call after {DELAY_S:.0f} s; first background health fetch took "
          f"{background_s:.2f} s after the first refresh.\ncallback times: context {first_context_s:.3f} s, "
          f"overview {overview_s:.3f} s, health {health_s:.3f} s; while the next fetch is under way: "
          f"context {later_context_s:.3f} s, health {later_health_s:.3f} s")
    # A callback that waited on Flink would take >= 5 s (two sequential calls: >= 10 s).
    for elapsed in (first_context_s, overview_s, health_s, later_context_s, later_health_s):
        assert elapsed < 1.5
