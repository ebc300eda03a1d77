"""The dashboard under load: N concurrent clients (default 20) on the JSON API and the page's callbacks, for
the development server (`python -m dashboard`) and gunicorn (`python -m dashboard --serve`) in the same run.

    .venv/bin/python bench/dashboard_load.py [--clients 20] [--duration 30] [--servers dev,gunicorn]
        [--fill-windows 1000000] [--keep-fill] [--cleanup] [--url http://127.0.0.1:8050]

Against the stack's database (conf/pipeline.toml, MARKETPULSE_* variables): run it beside `make demo` for the
demo's load. Steps, each printed:
1. --fill-windows N: N window rows (the generator's symbols, datastream engine, 60 s windows: 10 symbols x 70
   days for 1M) COPYed into window_metrics, ending at a whole hour before the oldest window already there, so
   the demo's rows are untouched; the range is recorded in the stack directory, and the rows are deleted at
   the end (--keep-fill keeps them, --cleanup only deletes a kept fill).
2. per server: started on a free port against the same database; its start time (spawn to first answer of
   /api/symbols); --warmup seconds of load not counted; then --duration seconds of load. --dev-tree runs the
   dev server, and any server named KIND@before (gunicorn@before), from another source tree (the code
   before a change). Environment variables reach the servers:
   MARKETPULSE_DASHBOARD_CACHE_SECONDS=0 measures without the response cache.
3. the load: each client is a browser with one view open (overview, symbol, anomalies, health, quality) and a
   range (15m, 1h, 5m, 1d, all), spread over the clients. An iteration is either one JSON API request
   (/api/metrics, /api/anomalies, /api/symbols, /api/health) or one refresh tick as the browser sends it:
   the context callback, then the five views' callbacks with the context it returned (the closed views answer
   no_update) and the alert strip: payloads built from the app's /_dash-layout and /_dash-dependencies.
   --api-share of the requests are API requests. Clients send back to back (closed loop, no think time: the
   server's saturation), or with --pace 2 as browsers do: a tick every 2 s ([dashboard] refresh_seconds), then
   the API requests of the share (7 for 0.5), then wait for the next tick.
4. per server: req/s and p50/p95/p99 per endpoint, per class (api, callback) and overall; the server's CPU
   time per request (its process and workers, from /proc: on a shared machine the figure that other load
   changes least) and the load average; then one line per server to compare.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from bench.lib import load  # noqa: E402
from marketpulse.config import load_settings, postgres_dsn  # noqa: E402
from stack import paths  # noqa: E402

FILL_RECORD = paths.STACK_DIR / "bench" / "dashboard_load_fill.json"
# Server kinds: the command, and environment overrides ("-nocache": without the response cache).
SERVERS = {"dev": (["-m", "dashboard"], {}), "gunicorn": (["-m", "dashboard", "--serve"], {}),
           "gunicorn-nocache": (["-m", "dashboard", "--serve"], {"MARKETPULSE_DASHBOARD_CACHE_SECONDS": "0"}),
           "dev-nocache": (["-m", "dashboard"], {"MARKETPULSE_DASHBOARD_CACHE_SECONDS": "0"})}


def say(text: str) -> None:
    print(text, flush=True)


# --- the fill --------------------------------------------------------------------------------------------

def connect(settings):
    # The schema owner: the fill and its cleanup switch the roll-up trigger off (ALTER TABLE).
    conn = psycopg2.connect(postgres_dsn(settings, "owner"))
    conn.autocommit = True
    return conn


def fill(settings, rows: int, symbols: list[str]) -> None:
    if FILL_RECORD.exists():
        raise SystemExit(f"error: a fill is already recorded in {FILL_RECORD}; run with --cleanup first")
    with closing(connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT min(window_start) FROM window_metrics WHERE engine = 'datastream' "
                    "AND window_seconds = 60")
        oldest = cur.fetchone()[0]
    before = min(oldest or datetime.now(UTC), datetime.now(UTC) - timedelta(hours=2))
    start, end = load.fill_span(rows, len(symbols), 60, before)
    frame = load.fill_frame(symbols, "datastream", 60, start, end)
    say(f"  fill: {len(frame):,} window rows, {len(symbols)} symbols x 60 s, {start:%Y-%m-%d %H:%M} -> "
        f"{end:%Y-%m-%d %H:%M} UTC ({(end - start).days} days)")
    started = time.perf_counter()
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False)
    buffer.seek(0)
    with closing(psycopg2.connect(postgres_dsn(settings, "owner"))) as conn, conn.cursor() as cur:
        # One transaction: the roll-up's row trigger is off only inside it (the demo's writers wait on the
        # table lock meanwhile), and the fill's hours are added to window_metrics_hourly in one statement
        # instead of one upsert per row.
        cur.execute("ALTER TABLE window_metrics DISABLE TRIGGER window_metrics_hourly_rows")
        cur.copy_expert(f"COPY window_metrics ({', '.join(frame.columns)}) FROM STDIN WITH (FORMAT csv)",
                        buffer)
        cur.execute("""
            INSERT INTO window_metrics_hourly
            SELECT engine, window_seconds, date_trunc('hour', window_start, 'UTC'), symbol, count(*),
                   sum(volume), sum(notional), sum(trade_count), sum(close)
            FROM window_metrics
            WHERE engine = 'datastream' AND window_seconds = 60 AND symbol = ANY(%s)
              AND window_start >= %s AND window_start < %s
            GROUP BY 1, 2, 3, 4""", (symbols, start, end))
        cur.execute("ALTER TABLE window_metrics ENABLE TRIGGER window_metrics_hourly_rows")
        conn.commit()
    # Recorded once committed (a failed fill rolls back whole, leaving nothing to clean up).
    FILL_RECORD.parent.mkdir(parents=True, exist_ok=True)
    FILL_RECORD.write_text(json.dumps({"engine": "datastream", "window_seconds": 60, "symbols": symbols,
                                       "start": start.isoformat(), "end": end.isoformat()}))
    say(f"    COPY + roll-up: {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    with closing(connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("ANALYZE window_metrics")
        cur.execute("ANALYZE window_metrics_hourly")
    say(f"    ANALYZE: {time.perf_counter() - started:.1f} s")


def cleanup(settings) -> None:
    if not FILL_RECORD.exists():
        say("  cleanup: no fill recorded")
        return
    record = json.loads(FILL_RECORD.read_text())
    started = time.perf_counter()
    with closing(psycopg2.connect(postgres_dsn(settings, "owner"))) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE window_metrics DISABLE TRIGGER window_metrics_hourly_rows")
        where = ("engine = %(engine)s AND window_seconds = %(window_seconds)s AND symbol = ANY(%(symbols)s) "
                 "AND {column} >= {start} AND {column} < %(end)s")
        cur.execute("DELETE FROM window_metrics WHERE "
                    + where.format(column="window_start", start="%(start)s"), record)
        deleted = cur.rowcount
        # The fill's hours are its own (load.fill_span: it ends at a whole hour before any other row; its
        # first hour, partly filled, holds nothing else either): their roll-up rows go with it.
        cur.execute("DELETE FROM window_metrics_hourly WHERE "
                    + where.format(column="hour", start="date_trunc('hour', %(start)s::timestamptz, 'UTC')"),
                    record)
        cur.execute("ALTER TABLE window_metrics ENABLE TRIGGER window_metrics_hourly_rows")
        conn.commit()
    FILL_RECORD.unlink()
    say(f"  cleanup: {deleted:,} fill rows deleted ({time.perf_counter() - started:.1f} s)")


# --- the servers -----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start_server(kind: str, port: int, log: Path, tree: Path = ROOT) -> tuple[subprocess.Popen, float]:
    command, overrides = SERVERS[kind]
    env = dict(os.environ, MARKETPULSE_DASHBOARD_HOST="127.0.0.1", MARKETPULSE_DASHBOARD_PORT=str(port),
               **overrides)
    if tree != ROOT:
        env["PYTHONPATH"] = str(tree)  # its packages before the installed (editable) ones
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *command], cwd=tree, env=env, stdin=subprocess.DEVNULL,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the {kind} server exited ({proc.returncode}); its log: {log}")
        try:
            if get(port, "/api/symbols", timeout=5)[0] == 200:
                return proc, time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.1)
    stop_server(proc)
    raise SystemExit(f"error: the {kind} server did not answer within 90 s; its log: {log}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tree_cpu_seconds(root: int) -> float:
    """CPU time (user + system) of process `root` and every live descendant (gunicorn's workers), from /proc.
    A figure the machine's other load does not change much, unlike latencies: CPU per request."""
    parents, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


# --- the load --------------------------------------------------------------------------------------------

class App:
    """What the clients need of the app: its callbacks and the initial values of their inputs."""

    def __init__(self, port: int):
        status, body = get(port, "/_dash-layout")
        self.props = load.layout_props(json.loads(body))
        status, body = get(port, "/_dash-dependencies")
        dependencies = json.loads(body)
        self.callbacks = {output: load.find_callback(dependencies, output) for output in load.TICK_CALLBACKS}
        status, body = get(port, "/api/symbols")
        self.symbols = [row["symbol"] for row in json.loads(body)["symbols"]]

    def initial_values(self) -> dict[str, object]:
        values = {}
        for dep in self.callbacks.values():
            for item in [*dep["inputs"], *dep.get("state", [])]:
                props = self.props.get(item["id"], {})
                values[f"{item['id']}.{item['property']}"] = props.get(item["property"])
        return values


class Client(threading.Thread):
    def __init__(self, port: int, app: App, plan: load.ClientPlan, api_share: float, pace: float, seed: int,
                 stop_at: float, results: dict):
        super().__init__(daemon=True)
        self.port, self.app, self.plan, self.pace = port, app, plan, pace
        self.api_probability = load.api_probability(api_share)
        self.api_per_tick = load.api_per_tick(api_share) if pace else 0
        self.rng = random.Random(seed)
        self.stop_at, self.results = stop_at, results
        self.conn: http.client.HTTPConnection | None = None
        self.values = app.initial_values()
        self.values.update({"tabs.value": plan.tab, "range-select.value": plan.range_key,
                            "symbol-select.value": plan.symbol, "tick.n_intervals": 0,
                            "alert-strip-tick.n_intervals": 0})

    def request(self, name: str, method: str, path: str, body: bytes | None = None) -> bytes | None:
        started = time.perf_counter()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            headers = {"Content-Type": "application/json"} if body is not None else {}
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
            ok = response.status < 500 and response.status != 404
            if response.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn, data, ok = None, None, False
        if time.perf_counter() < self.stop_at:
            self.results[name].append((time.perf_counter() - started, ok))
        return data if ok else None

    def callback(self, output: str, changed: list[str]) -> dict | None:
        dep = self.app.callbacks[output]
        body = json.dumps(load.payload(dep, self.values, changed)).encode()
        name = "callback " + (output.split(".")[0] if output != load.CONTEXT else "context")
        data = self.request(name, "POST", "/_dash-update-component", body)
        return json.loads(data) if data and output == load.CONTEXT else None

    def tick(self) -> None:
        self.values["tick.n_intervals"] += 1
        self.values["alert-strip-tick.n_intervals"] += 1
        answer = self.callback(load.CONTEXT, ["tick.n_intervals"])
        if answer:
            for component, props in answer.get("response", {}).items():
                for prop, value in props.items():
                    self.values[f"{component}.{prop}"] = value
        for output in load.VIEWS.values():
            self.callback(output, ["context.data"])
        self.callback(load.ALERT_STRIP, ["alert-strip-tick.n_intervals"])

    def api(self) -> None:
        path = load.api_paths(self.app.symbols, self.rng)
        self.request("api " + path.split("?")[0].rsplit("/", 1)[1], "GET", path)

    def run(self) -> None:
        if self.pace:
            # Browsers are not in step: each starts at its own point of the refresh interval.
            next_at = time.perf_counter() + self.rng.uniform(0, self.pace)
            time.sleep(max(0.0, next_at - time.perf_counter()))
        while time.perf_counter() < self.stop_at:
            if not self.pace:
                if self.rng.random() < self.api_probability:
                    self.api()
                else:
                    self.tick()
                continue
            self.tick()
            for _ in range(self.api_per_tick):
                self.api()
            next_at += self.pace
            now = time.perf_counter()
            if next_at > now:
                time.sleep(max(0.0, min(next_at, self.stop_at) - now))
            else:
                next_at = now  # behind: the next tick at once, no burst to catch up
        if self.conn is not None:
            self.conn.close()


def run_load(port: int, clients: int, seconds: float, api_share: float, pace: float) -> dict[str, list]:
    app = App(port)
    results: dict[str, list] = defaultdict(list)
    stop_at = time.perf_counter() + seconds
    threads = [Client(port, app, plan, api_share, pace, seed, stop_at, results)
               for seed, plan in enumerate(load.plans(clients, app.symbols))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def summaries(results: dict[str, list], seconds: float) -> list[load.Summary]:
    def summary(name, samples):
        return load.summarize(name, [t for t, ok in samples if ok], sum(1 for _, ok in samples if not ok),
                              seconds)

    rows = [summary(name, results[name]) for name in sorted(results)]
    for cls in ("api", "callback"):
        rows.append(summary(f"= {cls} (all)", [s for name, v in results.items() if name.startswith(cls)
                                               for s in v]))
    rows.append(summary("= all requests", [s for v in results.values() for s in v]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of measured load per server")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load first, not counted")
    parser.add_argument("--servers", default="dev,gunicorn",
                        help=f"which to start and measure, in order: of {', '.join(SERVERS)}")
    parser.add_argument("--url", help="measure this running dashboard instead of starting servers")
    parser.add_argument("--dev-tree", type=Path, default=ROOT,
                        help="run the dev server from this source tree (`git archive <commit> | tar -x -C "
                             "DIR`: the code before), for a before/after in one run")
    parser.add_argument("--api-share", type=float, default=0.5, help="share of requests to the JSON API")
    parser.add_argument("--pace", type=float, default=0.0,
                        help="seconds between a client's refresh ticks, as a browser ([dashboard] "
                             "refresh_seconds = 2), each followed by its share of API requests; "
                             "0: back to back (closed loop)")
    parser.add_argument("--fill-windows", type=int, default=0, help="window rows to add first (1000000)")
    parser.add_argument("--keep-fill", action="store_true", help="leave the fill in the database")
    parser.add_argument("--cleanup", action="store_true", help="only delete a kept fill")
    args = parser.parse_args()
    settings = load_settings()
    if args.cleanup:
        cleanup(settings)
        return
    if args.fill_windows:
        fill(settings, args.fill_windows, list(settings.generator.symbols))
    try:
        with closing(connect(settings)) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM window_metrics")
            say(f"  window_metrics: {cur.fetchone()[0]:,} rows")
        compared = []
        targets = [("external", int(args.url.rsplit(":", 1)[1].strip("/")))] if args.url else \
            [(kind, None) for kind in args.servers.split(",")]
        for kind, port in targets:
            proc = None
            if port is None:
                port = free_port()
                # "kind@before": the server of --dev-tree (the code before a change), any kind.
                server, before = kind.removesuffix("@before"), kind.endswith("@before")
                tree_root = args.dev_tree if before or server.startswith("dev") else ROOT
                log = paths.STACK_DIR / "bench" / f"dashboard_load_{kind.replace('@', '_')}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                proc, startup = start_server(server, port, log, tree_root)
                command, overrides = SERVERS[server]
                tree = f" in {tree_root}" if tree_root != ROOT else ""
                say(f"== {kind} server (python {' '.join(command)}{tree} "
                    f"{' '.join(f'{k}={v}' for k, v in overrides.items())}) on port {port}: answering "
                    f"{startup:.2f} s after spawn (log {log})")
            try:
                if args.warmup:
                    run_load(port, args.clients, args.warmup, args.api_share, args.pace)
                cpu = tree_cpu_seconds(proc.pid) if proc is not None else None
                load_before = os.getloadavg()[0]
                results = run_load(port, args.clients, args.duration, args.api_share, args.pace)
                cpu = tree_cpu_seconds(proc.pid) - cpu if proc is not None else None
                load_after = os.getloadavg()[0]
            finally:
                if proc is not None:
                    stop_server(proc)
            rows = summaries(results, args.duration)
            mode = f"a tick every {args.pace:g} s" if args.pace else "back to back"
            for line in load.summary_lines(f"{kind}: {args.clients} clients ({mode}), {args.duration:g} s, "
                                           f"api share {args.api_share:g}", rows):
                say(line)
            served = rows[-1].requests + rows[-1].errors
            per_request = f"{cpu * 1000 / served:.1f} ms server CPU per request" if cpu and served else ""
            say(f"  {per_request}; load average {load_before:.1f} -> {load_after:.1f} "
                f"({os.cpu_count()} cores)")
            compared.append((kind, rows[-3:], per_request))
        say("summary (req/s, p50 / p95 / p99 ms; errors):")
        for kind, (api, cb, total), per_request in compared:
            say(f"  {kind:<10} all {total.rate:6.1f} req/s {total.p50_ms:6.1f} / {total.p95_ms:6.1f} / "
                f"{total.p99_ms:6.1f}; api {api.p95_ms:.1f} p95; callbacks {cb.p95_ms:.1f} p95; "
                f"errors {total.errors}; {per_request}")
    finally:
        if args.fill_windows and not args.keep_fill:
            cleanup(settings)


if __name__ == "__main__":
    main()
