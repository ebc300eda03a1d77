"""A micro-cache of whole responses: the page's refresh callbacks and the JSON API (not /api/health), for
[dashboard] cache_seconds (1 s; 0 turns it off).

Every open page asks the same questions on every refresh tick (the context of the range shown, the view's
rows): N browsers on one dashboard cost N times the queries, figures and JSON for the same answer. Within
`cache_seconds` an identical request gets the stored response, and while one thread computes an answer,
threads asking the same question wait for it instead of computing it again. A response is at most
`cache_seconds` older than a fresh one (refresh_seconds is 2). Only 200 and 204 responses are kept; each
worker process has its own cache.

A callback request is identified by its body with the refresh counters' values (`n_intervals`: each
browser's own count of ticks, which no callback reads) left out; a GET by its path and query string."""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from prometheus_client import Counter

CALLBACK_PATH = "/_dash-update-component"
UNCACHED = ("/api/health",)  # it says how old its snapshot of the cluster is (age_seconds)


def callback_key(body: bytes) -> str | None:
    """A Dash callback request's identity: its JSON body, keys sorted, `n_intervals` values blanked; None
    when it is not a JSON object (Dash answers it with an error, uncached). Pure."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    for group in ("inputs", "state"):
        items = data.get(group)
        if isinstance(items, list):
            data[group] = [dict(item, value=None) if isinstance(item, dict)
                           and item.get("property") == "n_intervals" else item for item in items]
    return "POST " + json.dumps(data, sort_keys=True, separators=(",", ":"))


def request_key(method: str, path: str, query: bytes, body: Callable[[], bytes]) -> str | None:
    """The cache key of a request, None when it is not cached. `body` is read only for callbacks. Pure."""
    if method == "POST" and path == CALLBACK_PATH:
        return callback_key(body())
    if method == "GET" and path.startswith("/api/") and path not in UNCACHED:
        return f"GET {path}?{query.decode('latin-1')}"
    return None


class ResponseCache:
    """key -> value for `seconds`, at most `max_entries` (oldest out first), with single flight: `claim`
    either returns a fresh value, or makes the caller the one computing it (None), or waits for the thread
    computing it and returns its value."""

    def __init__(self, seconds: float, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic,
                 wait_seconds: float = 10.0):
        self.seconds, self.max_entries, self.clock = seconds, max_entries, clock
        self.wait_seconds = wait_seconds
        self._entries: OrderedDict[str, tuple[float, object]] = OrderedDict()
        self._computing: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def _fresh(self, key: str):
        entry = self._entries.get(key)
        if entry is not None and self.clock() - entry[0] < self.seconds:
            return entry[1]
        return None

    def claim(self, key: str):
        """A fresh value (a hit), or None: the caller computes it and must `put` or `release` the key."""
        while True:
            with self._lock:
                value = self._fresh(key)
                if value is not None:
                    return value
                event = self._computing.get(key)
                if event is None:
                    self._computing[key] = threading.Event()
                    return None
            # Another thread computes this answer: wait for it, then look again (it may have failed).
            if not event.wait(self.wait_seconds):
                return None

    def put(self, key: str, value) -> None:
        with self._lock:
            self._entries[key] = (self.clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        self.release(key)

    def get(self, key: str, compute: Callable[[], object]):
        """The fresh value of `key`, or `compute()`'s, stored (single flight); an exception from `compute`
        stores nothing and reaches the caller."""
        value = self.claim(key)
        if value is None:
            try:
                value = compute()
            except BaseException:
                self.release(key)
                raise
            self.put(key, value)
        return value

    def release(self, key: str) -> None:
        """The computing thread is done with `key` (stored or not): the waiting threads go on."""
        with self._lock:
            event = self._computing.pop(key, None)
        if event is not None:
            event.set()


CACHE_REQUESTS = Counter("marketpulse_dashboard_cache_requests_total",
                         "Callback and API requests the response cache saw, by result", ["result"])


def install(server, seconds: float) -> None:
    """Serves repeated requests on `server` (Flask) from a ResponseCache of `seconds` (0: not at all)."""
    if seconds <= 0:
        return
    from flask import Response, g, request

    cache = ResponseCache(seconds)

    @server.before_request
    def serve_cached():
        key = request_key(request.method, request.path, request.query_string, request.get_data)
        if key is None:
            return None
        hit = cache.claim(key)
        if hit is None:
            g.response_cache_key = key
            CACHE_REQUESTS.labels("miss").inc()
            return None
        CACHE_REQUESTS.labels("hit").inc()
        body, status, mimetype = hit
        return Response(body, status=status, mimetype=mimetype)

    @server.after_request
    def keep(response):
        key = g.pop("response_cache_key", None)
        if key is not None:
            if response.status_code in (200, 204) and not response.direct_passthrough:
                cache.put(key, (response.get_data(), response.status_code, response.mimetype))
            else:
                cache.release(key)
        return response

    @server.teardown_request
    def release(_error):
        # A request that raised never reached after_request: let the threads waiting on its key go on.
        key = g.pop("response_cache_key", None)
        if key is not None:
            cache.release(key)
