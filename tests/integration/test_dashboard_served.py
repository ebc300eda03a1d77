"""The dashboard as production serves it: `python -m dashboard --serve` (gunicorn, 2 workers) against a seeded
scratch database and the shared Flink cluster answers the page, a refresh callback (built from the app's own
layout and callback map, as bench/dashboard_load.py sends it) and /api/health; /metrics sums every worker's
query counts (prometheus_client's multiprocess mode)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest
from psycopg2.extras import execute_values

from bench.lib import load
from tests import support

pytestmark = pytest.mark.integration

T0 = datetime(2025, 6, 2, 13, 30, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(port: int, path: str, body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def series(port: int) -> dict[str, float]:
    """/metrics (every worker's, summed): the symbols query's count, the response cache's hits and misses."""
    text = http(port, "/metrics")[1].decode()
    wanted = {"symbols": r'marketpulse_dashboard_query_seconds_count\{query="symbols"\}',
              "hit": r'marketpulse_dashboard_cache_requests_total\{result="hit"\}',
              "miss": r'marketpulse_dashboard_cache_requests_total\{result="miss"\}'}
    values = {}
    for name, pattern in wanted.items():
        found = re.search(rf"^{pattern} (\S+)$", text, re.M)
        values[name] = float(found.group(1)) if found else 0.0
    return values


@pytest.fixture
def served(scratch_db, tmp_path):
    with closing(support.pg_connect(scratch_db)) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO symbols (symbol, company, sector, exchange, start_price) VALUES "
                    "('AAPL', 'Apple Inc.', 'Technology', 'NASDAQ', 190.5)")
        rows = []
        for i in range(30):
            start, close = T0 + timedelta(minutes=i), 200.0 + i
            rows.append(("datastream", "AAPL", 60, start, start + timedelta(minutes=1), close - 1, close + 1,
                         close - 2, close, close - 0.5, 100, (close - 0.5) * 100, 10, 6, 4, close - 2,
                         close + 1, close - 0.25, 0.5))
        execute_values(cur, "INSERT INTO window_metrics VALUES %s", rows)
    port = free_port()
    log = tmp_path / "dashboard.log"
    env = support.env_for(scratch_db, dashboard_host="127.0.0.1", dashboard_port=port, dashboard_workers=2,
                          dashboard_threads=2)
    proc = subprocess.Popen([sys.executable, "-m", "dashboard", "--serve"], cwd=support.REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        def up():
            if proc.poll() is not None:
                pytest.fail(f"the server exited: {log.read_text()[-2000:]}", pytrace=False)
            try:
                return http(port, "/api/symbols")[0] == 200
            except OSError:
                return False
        support.wait_for(up, 60, "gunicorn to answer /api/symbols", interval=0.2)
        yield port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert "Traceback" not in log.read_text()


def test_gunicorn_serves_the_page_a_callback_and_the_health_api(served):
    port = served
    status, page = http(port, "/")
    assert status == 200
    assert b"<title>MarketPulse</title>" in page and b"_dash-renderer" in page

    props = load.layout_props(json.loads(http(port, "/_dash-layout")[1]))
    dependencies = json.loads(http(port, "/_dash-dependencies")[1])
    dep = load.find_callback(dependencies, load.CONTEXT)
    values = {f"{item['id']}.{item['property']}": props.get(item["id"], {}).get(item["property"])
              for item in [*dep["inputs"], *dep["state"]]}
    values["range-select.value"] = "15m"
    status, body = http(port, "/_dash-update-component", load.payload(dep, values, ["tick.n_intervals"]))
    assert status == 200
    answer = json.loads(body)["response"]
    context = answer["context"]["data"]
    # The seeded series: 30 one-minute windows from T0; the last 15 minutes of it, relative to its end.
    assert (context["db_ok"], context["has_data"], context["engine"], context["window_seconds"]) == (
        True, True, "datastream", 60)
    assert datetime.fromisoformat(context["end"]) == T0 + timedelta(minutes=30)
    assert datetime.fromisoformat(context["start"]) == T0 + timedelta(minutes=15)
    assert answer["symbol-select"]["options"] == [{"label": "AAPL · Apple Inc.", "value": "AAPL"}]

    status, body = http(port, "/api/health")
    assert status == 200
    health = json.loads(body)
    assert health["database"] == {"ok": True, "error": None}
    assert health["flink"]["ok"] is True
    assert {row["engine"]: row["window_seconds"] for row in health["data"]} == {"datastream": 60}


def test_metrics_sum_every_workers_queries(served):
    port = served
    before = series(port)
    time.sleep(1.1)  # past [dashboard] cache_seconds: the start-up checks' /api/symbols answers have expired
    for _ in range(12):  # one connection each: they land on either worker, /metrics on either
        assert http(port, "/api/symbols")[0] == 200
    after = series(port)
    delta = {name: after[name] - before[name] for name in before}
    # Every request went through a worker's response cache; each miss, and only a miss, ran the query.
    assert delta["hit"] + delta["miss"] == 12
    assert delta["miss"] >= 1 and delta["symbols"] == delta["miss"]
