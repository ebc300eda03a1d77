"""How long a newcomer waits for data: runs `make demo` (the README's run command) and measures, from its
start: when the jobs run (after the stack is up, as the demo prints it), the first window row in PostgreSQL
(the demo's history), 50 one-minute candles of AAPL on the dashboard's symbol view (headless Chromium, the
hour the demo's link opens on), and the first window row of the live part (a window that starts after the
generator did). Then stops the demo with Ctrl-C (SIGINT), as a user would.

    .venv/bin/python bench/demo_first_data.py [--timeout 600] [--candles 50]

Run it with the stack's ports free of other demos; the stack stays up afterwards (`make down`)."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from marketpulse.config import load_settings  # noqa: E402
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402


def say(text: str) -> None:
    print(f"[bench] {text}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    parser.add_argument("--candles", type=int, default=50, help="one-minute candles of AAPL to wait for")
    args = parser.parse_args()
    settings = load_settings()
    url = f"http://{settings.dashboard.host}:{settings.dashboard.port}"

    started, started_wall = time.monotonic(), time.time()
    demo = subprocess.Popen(["make", "demo"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    marks: dict[str, float] = {}

    def follow() -> None:
        for line in demo.stdout:
            sys.stdout.write("  | " + line)
            if "MarketPulse is running" in line:
                marks.setdefault("demo_ready", time.monotonic() - started)
            if "trades/s with anomalies" in line:  # printed as the generator starts: live from here
                marks.setdefault("generator_wall", time.time())
            found = re.search(r"jobs running (\d+)s after the stack was up", line)
            if found:
                marks.setdefault("jobs_running_after_stack", float(found.group(1)))

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        while "demo_ready" not in marks:
            if demo.poll() is not None or time.monotonic() - started > args.timeout:
                say(f"make demo exited ({demo.returncode}) or timed out before it was ready")
                return 1
            time.sleep(0.5)
        say(f"make demo ready (stack, jobs, generator, dashboard) after {marks['demo_ready']:.1f}s")

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(f"{url}/symbol/AAPL?range=1h")
            page.wait_for_function(
                """(wanted) => {
                    const gd = document.querySelector('#candles-graph .js-plotly-plot');
                    const t = gd && gd._fullData ? gd._fullData.find(d => d.type === 'candlestick') : null;
                    return t && t._length >= wanted;
                }""", arg=args.candles, timeout=max(1, args.timeout - (time.monotonic() - started)) * 1000,
                polling=500)
            marks["candles"] = time.monotonic() - started
            shot = ROOT / ".stack" / "demo" / f"aapl-{args.candles}-candles.png"
            page.screenshot(path=str(shot), full_page=True)
            # The overview the demo's link opens on: the watchlist's last-hour sparklines.
            page.goto(f"{url}/?range=1h")
            page.wait_for_selector("#watchlist svg, #watchlist img, #watchlist canvas", timeout=60_000)
            page.wait_for_timeout(2000)
            page.screenshot(path=str(shot.with_name("overview-1h.png")), full_page=True)
            browser.close()
        # Both from the rows' landed_at (the database's clock): the demo's own "first window row" line is
        # printed only once the dashboard is up.
        marks["first_window_row"] = first_row(settings, "landed_at >= to_timestamp(%s)", started_wall,
                                              started_wall, args.timeout)
        marks["first_live_row"] = first_row(settings, "window_start >= to_timestamp(%s)",
                                            marks["generator_wall"], started_wall, args.timeout)
        nan = float("nan")
        say(f"jobs running after the stack was up:      {marks.get('jobs_running_after_stack', nan):.0f}s")
        say(f"first window row in PostgreSQL:           {marks.get('first_window_row', nan):.1f}s")
        say(f"{args.candles} AAPL candles (60 s) on the dashboard: {marks['candles']:.1f}s "
            f"(screenshot {shot})")
        say(f"first LIVE window row in PostgreSQL:      {marks['first_live_row']:.1f}s")
        windows = settings.windows
        say(f"(all from `make demo` starting; windows {windows.size_seconds}s and "
            f"{windows.short_size_seconds}s, out-of-orderness {windows.max_out_of_orderness_ms} ms, "
            f"history {settings.demo.history_minutes:g} min at {settings.demo.history_rate:g} trades/s, "
            f"live {settings.demo.rate} trades/s)")
        return 0
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C, as in a terminal
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
        reader.join(5)
        say(f"make demo stopped with exit code {demo.returncode}")


def first_row(settings, condition: str, value: float, started_wall: float, timeout: float) -> float:
    """Seconds from the demo's start to the first window_metrics row (its landed_at) that meets the
    condition: any row written by this demo, or one of a window that starts after the generator went
    live."""
    import psycopg2

    from marketpulse.config import postgres_dsn

    deadline = time.monotonic() + timeout
    with psycopg2.connect(postgres_dsn(settings, "reader")) as conn:
        conn.autocommit = True
        while time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute("SELECT EXTRACT(EPOCH FROM min(landed_at)) FROM window_metrics "
                            f"WHERE {condition}",
                            (value,))
                landed = cur.fetchone()[0]
            if landed is not None:
                return float(landed) - started_wall
            time.sleep(0.5)
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
