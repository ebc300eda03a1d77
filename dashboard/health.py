"""Flink REST client for the pipeline-health view: jobs, their throughput, checkpoints and backpressure; and
the consumer lag per partition from Kafka's admin API (marketpulse.kafka_lag: log-end minus committed
offset, for every group on the trades and anomalies topics). The jobs' `pendingRecords` column is the Kafka
source's own estimate, kept beside it.

The dashboard's callbacks never call Flink themselves: a `HealthMonitor` fetches in a background thread on
its own interval ([dashboard] health_refresh_seconds) and callbacks and /api/health read its latest snapshot,
so a slow or hung REST API (each call may take up to `timeout`) cannot stall a refresh or an API call.
/api/health says how old its snapshot is (`age_seconds`)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from urllib.parse import quote

from marketpulse.kafka_lag import GroupLag, LagReader, LagUnavailable


class FlinkUnavailable(RuntimeError):
    """The Flink REST API did not answer."""


@dataclass
class Checkpoint:
    id: int
    status: str
    finished_at_ms: int | None
    duration_ms: int | None
    size_bytes: int | None


@dataclass
class Job:
    id: str
    name: str
    state: str
    start_time_ms: int
    duration_ms: int
    records_in_per_s: float | None = None
    records_out_per_s: float | None = None
    backpressure: str | None = None
    pending_records: float | None = None
    last_checkpoint: Checkpoint | None = None
    checkpoints_completed: int | None = None
    checkpoints_failed: int | None = None


@dataclass
class ClusterHealth:
    ok: bool
    error: str | None = None
    flink_version: str | None = None
    taskmanagers: int = 0
    slots_total: int = 0
    slots_available: int = 0
    jobs: list[Job] = field(default_factory=list)
    fetched_at: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ConsumerLag:
    ok: bool
    error: str | None = None
    groups: list[GroupLag] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "error": self.error,
                "consumer_lag": [group.as_dict() for group in self.groups]}


def read_lag(reader: LagReader | None) -> ConsumerLag:
    if reader is None:
        return ConsumerLag(ok=False, error="no Kafka lag reader configured")
    try:
        return ConsumerLag(ok=True, groups=reader.read())
    except LagUnavailable as err:
        return ConsumerLag(ok=False, error=str(err))


BACKPRESSURE_RANK = {"ok": 0, "low": 1, "high": 2}


class FlinkClient:
    def __init__(self, rest_url: str, timeout: float = 2.0):
        self.rest_url = rest_url.rstrip("/")
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="flink-rest")

    def get(self, path: str):
        try:
            with urllib.request.urlopen(self.rest_url + path, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise FlinkUnavailable(f"{self.rest_url}{path}: {getattr(err, 'reason', err)}") from None

    def fetch(self) -> ClusterHealth:
        """The cluster now (uncached): every REST call it needs, each bounded by `timeout`."""
        try:
            overview = self.get("/overview")
            listed = self.get("/jobs/overview").get("jobs", [])
        except FlinkUnavailable as err:
            return ClusterHealth(ok=False, error=str(err), fetched_at=time.monotonic())
        jobs = [Job(id=j["jid"], name=j.get("name", ""), state=j.get("state", "UNKNOWN"),
                    start_time_ms=j.get("start-time", 0), duration_ms=j.get("duration", 0))
                for j in listed]
        running = [job for job in jobs if job.state == "RUNNING"]
        list(self._pool.map(self._details, running))
        jobs.sort(key=lambda job: (job.state != "RUNNING", -job.start_time_ms))
        return ClusterHealth(
            ok=True, flink_version=overview.get("flink-version"),
            taskmanagers=overview.get("taskmanagers", 0), slots_total=overview.get("slots-total", 0),
            slots_available=overview.get("slots-available", 0), jobs=jobs, fetched_at=time.monotonic())

    def _details(self, job: Job) -> None:
        """Fills throughput, backpressure, Kafka lag and checkpoints; leaves None where Flink has nothing."""
        try:
            detail = self.get(f"/jobs/{job.id}")
        except FlinkUnavailable:
            return
        nodes = detail.get("plan", {}).get("nodes", [])
        fed = {source["id"] for node in nodes for source in node.get("inputs", [])}
        sources = [node["id"] for node in nodes if not node.get("inputs")]
        sinks = [node["id"] for node in nodes if node["id"] not in fed]
        vertices = [vertex["id"] for vertex in detail.get("vertices", [])]
        job.records_in_per_s = self._metric_sum(job.id, sources, "numRecordsOutPerSecond")
        job.records_out_per_s = self._metric_sum(job.id, sinks, "numRecordsInPerSecond")
        job.pending_records = self._pending_records(job.id, sources)
        levels = []
        for vertex in vertices:
            try:
                level = self.get(f"/jobs/{job.id}/vertices/{vertex}/backpressure").get("backpressureLevel")
            except FlinkUnavailable:
                continue
            if level:
                levels.append(level)
        job.backpressure = max(levels, key=lambda lv: BACKPRESSURE_RANK.get(lv, -1)) if levels else None
        try:
            checkpoints = self.get(f"/jobs/{job.id}/checkpoints")
        except FlinkUnavailable:
            return
        counts = checkpoints.get("counts", {})
        job.checkpoints_completed = counts.get("completed")
        job.checkpoints_failed = counts.get("failed")
        latest = (checkpoints.get("latest") or {}).get("completed")
        if latest:
            job.last_checkpoint = Checkpoint(
                id=latest.get("id"), status=latest.get("status", "COMPLETED"),
                finished_at_ms=latest.get("latest_ack_timestamp"),
                duration_ms=latest.get("end_to_end_duration"),
                size_bytes=latest.get("checkpointed_size", latest.get("state_size")))

    def _metric_sum(self, job_id: str, vertices: list[str], metric: str) -> float | None:
        total, seen = 0.0, False
        for vertex in vertices:
            try:
                path = f"/jobs/{job_id}/vertices/{vertex}/subtasks/metrics"
                values = self.get(f"{path}?get={quote(metric, safe='')}&agg=sum")
            except FlinkUnavailable:
                continue
            for value in values or []:
                if value.get("id") == metric and value.get("sum") is not None:
                    total += float(value["sum"])
                    seen = True
        return total if seen else None

    def _pending_records(self, job_id: str, sources: list[str]) -> float | None:
        """Sum of the sources' `*.pendingRecords` metric (FLIP-33; the KafkaSource reports it)."""
        total, seen = 0.0, False
        for vertex in sources:
            try:
                names = [m["id"] for m in self.get(f"/jobs/{job_id}/vertices/{vertex}/subtasks/metrics")]
            except (FlinkUnavailable, KeyError, TypeError):
                continue
            wanted = [name for name in names if name.endswith("pendingRecords")]
            for name in wanted:
                value = self._metric_sum(job_id, [vertex], name)
                if value is not None:
                    total += value
                    seen = True
        return total if seen else None


class HealthMonitor:
    """Fetches `client.fetch()` and the Kafka consumer lag every `interval_seconds` in a daemon thread,
    started on first use; `latest()` / `latest_lag()` return the newest results at once (None until the
    first fetch has answered). The lag reader is this thread's own (a Kafka client is not shared)."""

    def __init__(self, client: FlinkClient, interval_seconds: float, lag_reader: LagReader | None = None):
        self.client = client
        self.interval_seconds = interval_seconds
        self.lag_reader = lag_reader
        self._latest: ClusterHealth | None = None
        self._latest_lag: ConsumerLag | None = None
        self._first = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def latest(self) -> ClusterHealth | None:
        self._ensure_started()
        return self._latest

    def latest_lag(self) -> ConsumerLag | None:
        self._ensure_started()
        return self._latest_lag

    def wait_first(self, timeout: float) -> ClusterHealth | None:
        """The first result, waiting up to `timeout` seconds for it (tests, startup)."""
        self._ensure_started()
        self._first.wait(timeout)
        return self._latest

    def stop(self) -> None:
        self._stopped.set()

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="flink-health", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._latest = self.client.fetch()
            self._latest_lag = read_lag(self.lag_reader)
            self._first.set()
            self._stopped.wait(self.interval_seconds)
