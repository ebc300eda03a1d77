"""How long a newcomer waits for data: runs `make demo` (the README's run command) and measures, from its
start, the time to the first window row in PostgreSQL (as the demo reports it) and to the first candle on
the dashboard's symbol view in headless Chromium. Then stops the demo with Ctrl-C (SIGINT), as a user would.

    .venv/bin/python bench/demo_first_data.py [--timeout 600]

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
    args = parser.parse_args()
    settings = load_settings()
    url = f"http://{settings.dashboard.host}:{settings.dashboard.port}"

    started = time.monotonic()
    demo = subprocess.Popen(["make", "demo"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    marks: dict[str, float] = {}

    def follow() -> None:
        for line in demo.stdout:
            sys.stdout.write("  | " + line)
            if "MarketPulse is running" in line:
                marks.setdefault("demo_ready", time.monotonic() - started)
            found = re.search(r"first window row in PostgreSQL (\d+)s", line)
            if found:
                marks.setdefault("first_window_row", time.monotonic() - started)

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
            page.goto(url)
            page.click("#tab-symbol")
            page.wait_for_function(
                """() => {
                    const gd = document.querySelector('#candles-graph .js-plotly-plot');
                    const t = gd && gd._fullData ? gd._fullData.find(d => d.type === 'candlestick') : null;
                    return t && t._length >= 1;
                }""", timeout=max(1, args.timeout - (time.monotonic() - started)) * 1000, polling=500)
            marks["first_candle"] = time.monotonic() - started
            page.screenshot(path=str(ROOT / ".stack" / "demo" / "first-candle.png"), full_page=True)
            browser.close()
        while "first_window_row" not in marks and time.monotonic() - started < args.timeout:
            time.sleep(0.5)
        say(f"time to first window row in PostgreSQL: {marks.get('first_window_row', float('nan')):.1f}s")
        say(f"time to first candle on the dashboard:  {marks['first_candle']:.1f}s")
        say(f"(windows {settings.windows.size_seconds}s and {settings.windows.short_size_seconds}s, "
            f"out-of-orderness {settings.windows.max_out_of_orderness_ms} ms, "
            f"generator {settings.demo.rate} trades/s)")
        return 0
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C, as in a terminal
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
        reader.join(5)
        say(f"make demo stopped with exit code {demo.returncode}")


if __name__ == "__main__":
    sys.exit(main())
