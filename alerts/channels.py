"""Delivery channels: the log, a generic JSON webhook and a Slack-compatible incoming webhook.

An HTTP channel POSTs the alert with the header Idempotency-Key: <trade_id>:<rule> (the same on every attempt
and every redelivery, so a receiver can drop repeats) and retries with exponential backoff
(alerts.retries, backoff_initial_ms * backoff_multiplier^n capped at backoff_max_ms): on a connection error,
a timeout, HTTP 408, 425, 429 and 5xx. Any other 4xx is the receiver refusing the payload, which retrying
will not change: it fails at once. A failed delivery is a ChannelResult with ok=False and the reason; the
service records it as a dead letter."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from alerts import payloads
from alerts.config import AlertConfig, redact
from alerts.policy import Anomaly, backoff_delays

RETRYABLE_STATUS = {408, 425, 429}
USER_AGENT = "marketpulse-alerts/1"


class Interrupted(Exception):
    """The service was asked to stop while a delivery waited to retry; nothing is recorded for it."""


@dataclass(frozen=True)
class ChannelResult:
    channel: str
    ok: bool
    attempts: int = 1
    status: int | None = None
    error: str | None = None
    payload: dict | None = None  # what was sent (kept for a dead letter)

    def as_json(self) -> dict:
        out = {"ok": self.ok, "attempts": self.attempts}
        if self.status is not None:
            out["status"] = self.status
        if self.error:
            out["error"] = self.error
        return out

    def text(self) -> str:
        if self.ok:
            return f"{self.channel} ok" + (f" ({self.attempts} attempts)" if self.attempts > 1 else "")
        return f"{self.channel} FAILED after {self.attempts} attempt(s): {self.error}"


class LogChannel:
    """One readable line per alert, written after the other channels so it says how they did."""

    name = "log"

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def deliver(self, anomaly: Anomaly, others: list[ChannelResult] | None = None) -> ChannelResult:
        outcome = "; ".join(result.text() for result in others or [])
        self.say(payloads.log_line(anomaly) + (f" -> {outcome}" if outcome else ""))
        return ChannelResult(self.name, True)


def post_json(url: str, body: dict, headers: dict[str, str], timeout: float) -> tuple[int | None, str | None,
                                                                                      bool]:
    """One POST. Returns (status, error, retryable); error is None on a 2xx."""
    data = json.dumps(body, separators=(",", ":")).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": USER_AGENT, **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(65536)
            return response.status, None, False
    except urllib.error.HTTPError as err:
        status = err.code
        retryable = status >= 500 or status in RETRYABLE_STATUS
        return status, f"HTTP {status} {err.reason}".strip(), retryable
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, TimeoutError | socket.timeout):
            return None, f"timed out after {timeout:g} s", True
        if isinstance(reason, ConnectionRefusedError):
            return None, "connection refused", True
        if isinstance(reason, socket.gaierror):
            return None, f"host not found ({reason.strerror or reason})", True
        return None, f"unreachable ({reason})", True
    except TimeoutError:
        return None, f"timed out after {timeout:g} s", True
    except (OSError, http.client.HTTPException) as err:
        return None, f"{type(err).__name__}: {err}".rstrip(": "), True


class HttpChannel:
    """POSTs `render(anomaly)` to `url` with retries; `sleep(seconds)` returns False when asked to stop."""

    def __init__(self, name: str, url: str, render: Callable[[Anomaly], dict], config: AlertConfig,
                 say: Callable[[str], None], sleep: Callable[[float], bool],
                 post: Callable[..., tuple[int | None, str | None, bool]] = post_json):
        self.name = name
        self.url = url
        self.render = render
        self.timeout = config.timeout_seconds
        self.delays = backoff_delays(config.retries, config.backoff_initial_ms, config.backoff_multiplier,
                                     config.backoff_max_ms)
        self.say = say
        self.sleep = sleep
        self.post = post

    def deliver(self, anomaly: Anomaly) -> ChannelResult:
        body = self.render(anomaly)
        headers = {"Idempotency-Key": anomaly.idempotency_key}
        attempts = 0
        status = error = None
        for delay in [*self.delays, None]:
            attempts += 1
            status, error, retryable = self.post(self.url, body, headers, self.timeout)
            if error is None:
                return ChannelResult(self.name, True, attempts, status)
            if not retryable or delay is None:
                break
            self.say(f"{self.name}: POST {anomaly.idempotency_key} to {redact(self.url)} failed ({error}); "
                     f"retry {attempts}/{len(self.delays)} in {delay:g} s")
            if not self.sleep(delay):
                raise Interrupted()
        if status is not None and not (status >= 500 or status in RETRYABLE_STATUS):
            error = f"{error} (not retried: the receiver refused the payload)"
        return ChannelResult(self.name, False, attempts, status, error, body)


def build_channels(config: AlertConfig, say: Callable[[str], None], sleep: Callable[[float], bool]) -> list:
    channels = []
    for name in config.active_channels():
        if name == "log":
            channels.append(LogChannel(say))
        elif name == "webhook":
            channels.append(HttpChannel("webhook", config.webhook_url, payloads.webhook_payload, config,
                                        say, sleep))
        elif name == "slack":
            channels.append(HttpChannel("slack", config.slack_webhook_url, payloads.slack_payload, config,
                                        say, sleep))
    return channels
