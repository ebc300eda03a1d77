"""Browser-test tooling: the dashboard as a real server process, and the Playwright helpers that read what
the page shows (Debian's /usr/bin/chromium, installed by `python -m stack setup --browser`; no browser
download). Screenshots land in test-artifacts/."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from contextlib import closing

from tests import support

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = support.REPO / "test-artifacts"
TIMEOUT_MS = 20_000


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Dashboard:
    """`python -m dashboard` on a free port against `settings`' database; stopped by stop()."""

    def __init__(self, settings, name: str):
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"dashboard-{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        env = support.env_for(settings, dashboard_port=self.port, dashboard_refresh_seconds=1)
        env["MARKETPULSE_POSTGRES_PORT"] = str(settings.postgres.port)
        self.proc = subprocess.Popen([sys.executable, "-m", "dashboard"], cwd=support.REPO, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        support.wait_for(self._up, 60, f"dashboard on {self.url} (log {self.log_path})")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            log = self.log_path.read_text()
            raise AssertionError(f"dashboard exited with {self.proc.returncode}:\n{log}")
        try:
            with urllib.request.urlopen(self.url + "/", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        assert "Traceback" not in self.log_path.read_text(), f"server errors in {self.log_path}"


def open_tab(page, view: str) -> None:
    page.click(f"#tab-{view}")
    page.wait_for_selector(f"#view-{view}", state="visible", timeout=TIMEOUT_MS)


def choose(page, dropdown_id: str, value: str) -> None:
    page.click(f"#{dropdown_id}")
    page.click(f".dash-dropdown-option:has(input[value='{value}'])")


def candle_trace(page) -> dict:
    """The candlestick trace as plotly.js holds it (x, close and the count), read from the DOM."""
    return page.evaluate("""() => {
        const gd = document.querySelector('#candles-graph .js-plotly-plot');
        const t = gd && gd._fullData ? gd._fullData.find(d => d.type === 'candlestick') : null;
        if (!t) return null;
        const markers = gd._fullData.filter(d => (d.name || '').startsWith('Anomaly: '))
                                    .reduce((n, d) => n + d._length, 0);
        return {count: t._length, close: Array.from(t.close), markers: markers};
    }""")


def wait_candles(page, count: int, symbol: str | None = None) -> dict:
    page.wait_for_function(
        """([n, sym]) => {
            const gd = document.querySelector('#candles-graph .js-plotly-plot');
            const t = gd && gd._fullData ? gd._fullData.find(d => d.type === 'candlestick') : null;
            const title = document.querySelector('[data-testid=symbol-title]');
            return t && t._length === n && (!sym || (title && title.textContent === sym));
        }""", arg=[count, symbol], timeout=TIMEOUT_MS)
    return candle_trace(page)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)
