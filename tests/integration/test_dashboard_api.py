"""The dashboard's REST API (Flask test client of the real app) against a seeded scratch database and the
shared Flink cluster: exact JSON for seeded rows, 4xx with a message for bad input, 503 without a database."""

import copy
import re
import threading
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest
from psycopg2.extras import execute_values

from dashboard.app import create_app
from dashboard.health import FlinkClient
from tests import support

pytestmark = pytest.mark.integration

T0 = datetime(2025, 6, 2, 13, 30, tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def window(engine, symbol, seconds, i, close):
    start = T0 + timedelta(seconds=seconds * i)
    return (engine, symbol, seconds, start, start + timedelta(seconds=seconds), close - 1, close + 1,
            close - 2, close, close - 0.5, 100 + i, (close - 0.5) * (100 + i), 10 + i, 6, 4 + i,
            close - 2, close + 1, close - 0.25, 0.5)


@pytest.fixture
def client(scratch_db):
    with closing(support.pg_connect(scratch_db)) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO symbols (symbol, company, sector, exchange, start_price) VALUES "
                    "('AAPL', 'Apple Inc.', 'Technology', 'NASDAQ', 190.5), "
                    "('MSFT', 'Microsoft Corp.', 'Technology', 'NASDAQ', 410.0)")
        execute_values(cur, "INSERT INTO window_metrics VALUES %s",
                       [window("datastream", "AAPL", 60, i, 200.0 + i) for i in range(5)]
                       + [window("datastream", "AAPL", 10, i, 200.0 + i / 10) for i in range(3)]
                       + [window("sql", "AAPL", 60, i, 300.0 + i) for i in range(2)])
        execute_values(cur, "INSERT INTO anomalies VALUES %s", [
            ("t1", "price_zscore", "AAPL", T0 + timedelta(seconds=30), 201.5, 50, 5.2, 200.0, 0.3,
             T0 + timedelta(seconds=31)),
            ("t2", "price_jump", "AAPL", T0 + timedelta(seconds=90), 204.0, 10, 3.1, None, None,
             T0 + timedelta(seconds=91)),
            ("t3", "volume_zscore", "MSFT", T0 + timedelta(seconds=150), 410.0, 9000, 4.5, 100.0, 20.0,
             T0 + timedelta(seconds=151))])
        execute_values(cur, "INSERT INTO late_trades VALUES %s",
                       [("datastream", "late1", "AAPL", 200.0, 5, "buy", T0, None)])
        execute_values(cur, "INSERT INTO dead_letters VALUES %s",
                       [("datastream", "sha1", "{", "invalid JSON", "trades", T0),
                        ("sql", "sha2", "[", "invalid JSON", "trades", T0)])
    app = create_app(scratch_db)
    return app.server.test_client()


def test_symbols(client):
    response = client.get("/api/symbols")
    assert response.status_code == 200
    assert response.get_json() == {"count": 2, "symbols": [
        {"symbol": "AAPL", "company": "Apple Inc.", "sector": "Technology", "exchange": "NASDAQ"},
        {"symbol": "MSFT", "company": "Microsoft Corp.", "sector": "Technology", "exchange": "NASDAQ"}]}


def test_metrics_for_a_symbol_and_range(client):
    response = client.get(f"/api/metrics?symbol=aapl&from={iso(T0 + timedelta(minutes=1))}"
                          f"&to={iso(T0 + timedelta(minutes=3))}")
    assert response.status_code == 200
    body = response.get_json()
    keys = ("symbol", "engine", "window_seconds", "from", "to", "count", "truncated")
    assert {k: body[k] for k in keys} == {
        "symbol": "AAPL", "engine": "datastream", "window_seconds": 60, "from": "2025-06-02T13:31:00Z",
        "to": "2025-06-02T13:33:00Z", "count": 2, "truncated": False}
    first = body["metrics"][0]
    assert first == {
        "window_start": "2025-06-02T13:31:00Z", "window_end": "2025-06-02T13:32:00Z", "open": 200.0,
        "high": 202.0, "low": 199.0, "close": 201.0, "vwap": 200.5, "volume": 101, "notional": 200.5 * 101,
        "trade_count": 11, "buy_count": 6, "sell_count": 5, "min_price": 199.0, "max_price": 202.0,
        "avg_price": 200.75, "stddev_price": 0.5}
    assert [m["close"] for m in body["metrics"]] == [201.0, 202.0]


def test_metrics_window_engine_and_limit(client):
    ten = client.get("/api/metrics?symbol=AAPL&window=10").get_json()
    assert (ten["count"], [m["close"] for m in ten["metrics"]]) == (3, [200.0, 200.1, 200.2])
    sql = client.get("/api/metrics?symbol=AAPL&engine=sql").get_json()
    assert [m["close"] for m in sql["metrics"]] == [300.0, 301.0]
    latest = client.get("/api/metrics?symbol=AAPL&limit=2").get_json()
    assert ([m["close"] for m in latest["metrics"]], latest["truncated"]) == ([203.0, 204.0], True)
    # A known symbol without windows: 200 with no rows (MSFT has a reference row only).
    assert client.get("/api/metrics?symbol=MSFT").get_json()["count"] == 0


def test_anomalies_filters(client):
    body = client.get("/api/anomalies").get_json()
    assert body["count"] == 3 and body["limit"] == 100
    assert [a["trade_id"] for a in body["anomalies"]] == ["t3", "t2", "t1"]
    assert body["anomalies"][1] == {
        "trade_id": "t2", "rule": "price_jump", "symbol": "AAPL", "event_time": "2025-06-02T13:31:30Z",
        "price": 204.0, "size": 10, "z_score": 3.1, "mean": None, "stddev": None,
        "detected_at": "2025-06-02T13:31:31Z"}
    assert [a["trade_id"] for a in client.get("/api/anomalies?symbol=AAPL").get_json()["anomalies"]] == \
        ["t2", "t1"]
    volume = client.get("/api/anomalies?rule=volume_zscore").get_json()["anomalies"]
    assert [a["trade_id"] for a in volume] == ["t3"]
    ranged = client.get(f"/api/anomalies?from={iso(T0)}&to={iso(T0 + timedelta(seconds=90))}").get_json()
    assert [a["trade_id"] for a in ranged["anomalies"]] == ["t1"]
    assert client.get("/api/anomalies?limit=1").get_json()["count"] == 1


@pytest.mark.parametrize(("url", "status", "message"), [
    ("/api/metrics", 400, "symbol is required"),
    ("/api/metrics?symbol=AAPL&window=abc", 400, "window='abc' is not an integer"),
    ("/api/metrics?symbol=AAPL&window=0", 400, "window=0 is out of range"),
    ("/api/metrics?symbol=AAPL&engine=spark", 400, "engine='spark' is not one of datastream, sql"),
    ("/api/metrics?symbol=AAPL&from=yesterday", 400, "from='yesterday' is not an ISO-8601 time"),
    ("/api/metrics?symbol=AAPL&from=2025-06-02T14:00:00Z&to=2025-06-02T13:00:00Z", 400,
     "from must be before to"),
    ("/api/metrics?symbol=AAPL;DROP", 400, "is not a ticker symbol"),
    ("/api/metrics?symbol=ZZZZ", 404, "unknown symbol 'ZZZZ'"),
    ("/api/metrics?symbol=AAPL&windw=60", 400, "unknown parameter(s) windw"),
    ("/api/anomalies?rule=fat_finger", 400, "rule='fat_finger' is not one of"),
    ("/api/anomalies?limit=100000", 400, "limit=100000 is out of range [1, 10000]"),
    ("/api/anomalies?limit=-1", 400, "limit=-1 is out of range"),
    ("/api/symbols?x=1", 400, "unknown parameter(s) x"),
    ("/api/nothing", 404, "no endpoint /api/nothing"),
])
def test_bad_requests_get_4xx_with_a_message(client, url, status, message):
    response = client.get(url)
    assert response.status_code == status
    assert message in response.get_json()["error"]


def test_health_lists_exactly_the_jobs_flink_lists(client, scratch_db, stack):
    for _attempt in range(5):  # other engineers' jobs may start/stop between the two reads
        before = {job["jid"]: job["state"] for job in support.flink_jobs(stack)}
        # A fresh app each time (the client's data): its first /api/health waits for its monitor's first
        # fetch, made between the two reads; a later one could answer with an older snapshot.
        body = create_app(scratch_db).server.test_client().get("/api/health").get_json()
        after = {job["jid"]: job["state"] for job in support.flink_jobs(stack)}
        if before == after:
            break
    assert body["status"] == "ok"
    assert body["database"] == {"ok": True, "error": None}
    assert body["flink"]["ok"] is True and body["flink"]["taskmanagers"] >= 1
    # The health monitor's snapshot, a fresh app's first: its age is the time since that fetch.
    assert 0 <= body["flink"]["age_seconds"] < 10 and "fetched_at" not in body["flink"]
    assert {job["id"]: job["state"] for job in body["flink"]["jobs"]} == after
    assert body["pipeline"] == {"late_trades": {"datastream": 1}, "dead_letters": {"datastream": 1, "sql": 1}}
    assert [(d["engine"], d["window_seconds"], d["latest_end"]) for d in body["data"]] == [
        ("datastream", 10, "2025-06-02T13:30:30Z"), ("datastream", 60, "2025-06-02T13:35:00Z"),
        ("sql", 60, "2025-06-02T13:32:00Z")]


def test_health_when_flink_is_unreachable_is_degraded(scratch_db):
    app = create_app(scratch_db, flink=FlinkClient("http://127.0.0.1:1", timeout=0.5))
    response = app.server.test_client().get("/api/health")
    body = response.get_json()
    assert response.status_code == 200
    assert body["status"] == "degraded"
    assert body["flink"]["ok"] is False and "127.0.0.1:1" in body["flink"]["error"]


def test_without_a_database_every_endpoint_answers_503(scratch_db):
    down = copy.deepcopy(scratch_db)
    down.postgres.port = 1
    client = create_app(down).server.test_client()
    for url in ("/api/symbols", "/api/metrics?symbol=AAPL", "/api/anomalies", "/api/health"):
        response = client.get(url)
        assert response.status_code == 503, url
    assert "database unavailable" in client.get("/api/symbols").get_json()["error"]
    body = client.get("/api/health").get_json()
    assert body["status"] == "down" and body["database"]["ok"] is False


def test_the_pages_scripts_load_when_they_come_with_the_first_request(scratch_db):
    """plotly/dash#3971: Dash filled its registry of scripts on the first request, so a script asked for by
    another thread at the same time (gunicorn's threads, a browser's parallel requests) got 500 "not a
    registered library" and the page stayed blank. Here one thread asks for the page and 24 for its scripts at
    once, on a fresh app: every answer is 200."""
    page = create_app(scratch_db).server.test_client().get("/").get_data(as_text=True)
    scripts = re.findall(r'src="(/_dash-component-suites/[^"]+)"', page)
    assert len(scripts) >= 3, page[:500]
    server = create_app(scratch_db).server
    urls = ["/"] + [scripts[i % len(scripts)] for i in range(24)]
    start = threading.Barrier(len(urls))
    statuses = {}

    def fetch(i, url):
        client = server.test_client()
        start.wait()
        statuses[i] = (url, client.get(url).status_code)

    threads = [threading.Thread(target=fetch, args=(i, url)) for i, url in enumerate(urls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = [(url, status) for url, status in statuses.values() if status != 200]
    assert len(statuses) == len(urls) and not failed, failed


# --- fuzz ----------------------------------------------------------------------------------------------

FUZZ_QUERIES = 10_000
# /api/health takes no parameter: a few hundred queries of it, not thousands.
FUZZ_PATHS = ("/api/symbols", "/api/metrics", "/api/metrics", "/api/anomalies", "/api/anomalies", "/api/nope",
              "/api/metrics/x") * 5 + ("/api/health",)
FUZZ_NAMES = ("symbol", "from", "to", "window", "engine", "limit", "rule", "x", "", "SYMBOL", "symbol[]")
FUZZ_VALUES = (
    "AAPL", "aapl", "MSFT", "ZZZZ", "A" * 16, "A" * 17, "", " ", "AAPL'; DROP TABLE window_metrics;--",
    "%00", "\x00", "\u202e", "😀", "../../etc", "60", "10", "0", "-1", "1e3", "9" * 40, "NaN", "inf", "1.5",
    "datastream", "sql", "price_jump", "2025-06-02T13:30:00Z", "2025-06-02T13:30:00+00:00",
    "2025-06-02 13:30:00 00:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01",
    "9999-12-31T23:59:59.999999", "2025-02-30T00:00:00", "2025-06-02T25:00:00", "2025-06-02T13:30:00+99:00",
    "T", "null", "[]", "{}", "true", "10000", "10001", "1000000000000000000000")


def fuzz_query(rng) -> str:
    """A random path with 0-4 parameters drawn from valid and hostile names and values, some of them
    random bytes, URL-encoded like a browser would."""
    from urllib.parse import urlencode

    params = []
    for _ in range(rng.randint(0, 4)):
        value = rng.choice(FUZZ_VALUES) if rng.random() < 0.85 else \
            "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(1, 12)))
        params.append((rng.choice(FUZZ_NAMES), value))
    path = rng.choice(FUZZ_PATHS)
    return f"{path}?{urlencode(params)}" if params else path


def test_fuzzed_queries_never_give_a_server_error(client):
    """#14: every parameter is validated. 10,000 seeded random queries (hostile names, values, times at
    the calendar's edges, unicode, injections): every answer is 200, 400 or 404 with a JSON body (an error
    message for 4xx), never a 5xx or a traceback."""
    import random
    from collections import Counter

    rng = random.Random(20261205)
    statuses: Counter = Counter()
    failures = []
    for _ in range(FUZZ_QUERIES):
        url = fuzz_query(rng)
        response = client.get(url)
        statuses[response.status_code] += 1
        body = response.get_json(silent=True)
        if response.status_code not in (200, 400, 404) or body is None or \
                (response.status_code >= 400 and not body.get("error")):
            failures.append((url, response.status_code, response.get_data(as_text=True)[:200]))
    counts = ", ".join(f"{code}: {n:,}" for code, n in sorted(statuses.items()))
    print(f"\n{FUZZ_QUERIES:,} fuzzed queries: {counts}; "
          f"server errors {sum(n for code, n in statuses.items() if code >= 500)}")
    assert not failures, f"{len(failures)} bad answers, first ones: {failures[:5]}"


def test_a_configured_login_guards_the_page_and_the_api_but_not_metrics(scratch_db, monkeypatch):
    import base64

    password = "p a'ss\"w\\rd;--%:"  # dash-auth splits user:password at the first colon only
    settings = copy.deepcopy(scratch_db)
    settings.dashboard.auth_user = "ops"
    monkeypatch.setenv("MARKETPULSE_DASHBOARD_AUTH_PASSWORD", password)  # as a deployment gives it
    settings.dashboard.auth_password = password
    client = create_app(settings).server.test_client()
    good = {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"ops:wrong").decode()}
    for path in ("/", "/api/symbols", "/api/health", "/_dash-layout", "/_dash-dependencies"):
        response = client.get(path)
        challenge = response.headers.get("WWW-Authenticate", "")
        assert (response.status_code, challenge[:5]) == (401, "Basic"), path
        assert client.get(path, headers=bad).status_code == 401, path
        assert client.get(path, headers=good).status_code == 200, path
    assert client.get("/api/symbols", headers=good).get_json() == {"count": 0, "symbols": []}
    assert client.get("/metrics").status_code == 200  # Prometheus scrapes without a login
