"""The alert service (`python -m alerts`) against the real Kafka and PostgreSQL: a local HTTP receiver gets
exactly one POST per (symbol, rule, cooldown period) for a seeded anomaly stream on a private topic, across
a kill -9 and restart and a replay of the whole topic; a receiver answering 500 gets the retries, then the
alert is a dead letter. The expected alerts are computed here from the stream, independently of
alerts/policy.py."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from marketpulse.analytics.detector import RULES
from tests import support

pytestmark = pytest.mark.integration

T0 = 1_750_000_000_000
COOLDOWN_S = 20
SYMBOLS = ("AAPL", "MSFT", "NVDA", "TSLA")


class Receiver:
    """A webhook receiver: http.server in a thread. Answers `status`; records every POST it answered as
    (Idempotency-Key, body). The `hold_at`-th POST is held (not answered) until release(): the test kills the
    service meanwhile, so that POST never counts as delivered."""

    def __init__(self, status: int = 200, hold_at: int | None = None):
        self.status = status
        self.hold_at = hold_at
        self.answered: list[tuple[str, dict]] = []
        self.held_key: str | None = None
        self.held = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._seen = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers["Idempotency-Key"]
                with receiver._lock:
                    receiver._seen += 1
                    hold = receiver._seen == receiver.hold_at
                if hold:
                    receiver.held_key = key
                    receiver.held.set()
                    receiver._release.wait(60)
                    self.close_connection = True
                    return  # the client is gone: nothing answered, nothing delivered
                with receiver._lock:
                    receiver.answered.append((key, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def keys(self) -> list[str]:
        with self._lock:
            return [key for key, _ in self.answered]

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


class AlertProcess:
    """`python -m alerts` against the scratch database and the private topic; output in test-artifacts/."""

    def __init__(self, scratch, topic: str, group: str, url: str, name: str, **overrides):
        support.REPO.joinpath("test-artifacts").mkdir(exist_ok=True)
        self.log_path = support.REPO / "test-artifacts" / f"alerts-{name}.log"
        env = support.env_for(scratch, kafka_anomalies_topic=topic, alerts_consumer_group=group,
                              alerts_webhook_url=url, alerts_channels="webhook,log",
                              alerts_cooldown_seconds=COOLDOWN_S, alerts_batch_max_records=25,
                              alerts_progress_seconds=2,
                              # The stream's event times are in 2025: no max age, or all would be stale.
                              alerts_max_age_seconds=0, **overrides)
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([sys.executable, "-m", "alerts"], cwd=support.REPO, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> str:
        """SIGTERM, as docker and `make demo` stop it: exits 0 with its summary line, no traceback."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.log.close()
        text = self.log_path.read_text()
        assert code == 0, f"alerts exited {code}:\n{text[-3000:]}"
        assert "Traceback" not in text, text[-3000:]
        return text

    def text(self) -> str:
        return self.log_path.read_text()


def seeded_stream(seed: int, n: int = 240) -> list[dict]:
    """Anomalies as the DataStream job writes them, some out of event-time order, then at-least-once
    repeats of earlier ones (as a job restore produces) mixed into the tail."""
    rng = random.Random(seed)
    t, stream = 0, []
    for i in range(n):
        t += rng.randint(0, 4000)
        jitter = -rng.randint(0, 3000) if rng.random() < 0.1 else 0
        event_time = T0 + t + jitter
        stream.append({"symbol": rng.choice(SYMBOLS), "trade_id": f"T{seed}-{i:04d}",
                       "rule": rng.choice(RULES), "event_time": event_time,
                       "price": round(rng.uniform(50, 500), 2), "size": rng.randint(1, 5000),
                       "z_score": round(rng.uniform(4, 9), 3), "mean": 0.0, "stddev": 0.001,
                       "detected_at": event_time + 3000})
    repeats = [dict(stream[i]) for i in sorted(rng.sample(range(n), 30))]
    for record in repeats:
        stream.insert(rng.randint(n // 2, len(stream)), record)
    return stream


def expected_alerts(stream: list[dict], cooldown_ms: int) -> set[str]:
    """One alert per (symbol, rule) and cooldown: the first anomaly, then the first one at least cooldown_ms
    of event time after the last alert; repeats of a (trade_id, rule) count once."""
    seen, last, alerts = set(), {}, set()
    for a in stream:
        key = f"{a['trade_id']}:{a['rule']}"
        if key in seen:
            continue
        seen.add(key)
        group = (a["symbol"], a["rule"])
        if group not in last or a["event_time"] - last[group] >= cooldown_ms:
            last[group] = a["event_time"]
            alerts.add(key)
    return alerts


def produce(settings, topic: str, stream: list[dict]) -> None:
    support.produce(settings, topic, [(a["symbol"].encode(), json.dumps(a).encode()) for a in stream])


def decisions(scratch) -> dict[str, str]:
    rows = support.query(scratch, "SELECT trade_id || ':' || rule, decision FROM alert_decisions")
    return dict(rows)


def committed(settings, group: str, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers, client_id="tests")
    try:
        offsets = admin.list_group_offsets(group)
    finally:
        admin.close()
    meta = offsets.get(group, {}).get(TopicPartition(topic, 0))
    return meta.offset if meta is not None else -1


def end_offset(settings, topic: str) -> int:
    with closing(KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)) as consumer:
        tp = TopicPartition(topic, 0)
        return consumer.end_offsets([tp])[tp]


def records_read(log_text: str) -> int:
    return int(re.findall(r"stopped: ([\d,]+) records read", log_text)[-1].replace(",", ""))


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def processes():
    started: list[AlertProcess] = []
    yield started
    for process in started:
        if process.alive():
            process.proc.kill()
            process.proc.wait(10)


def test_one_post_per_symbol_rule_and_cooldown_across_a_kill_and_a_replay(stack, kafka_topic, scratch_db,
                                                                         receivers, processes):
    topic = kafka_topic("alerts", partitions=1)
    stream = seeded_stream(11)
    expected = expected_alerts(stream, COOLDOWN_S * 1000)
    distinct = {f"{a['trade_id']}:{a['rule']}" for a in stream}
    assert 40 < len(expected) < len(distinct)  # the cooldown suppresses some, not all
    produce(stack, topic, stream)
    group = support.unique_name("alerts")
    receiver = receivers(hold_at=len(expected) // 2)

    # Run 1: killed with -9 while a POST is in flight, half-way through the alerts.
    first = AlertProcess(scratch_db, topic, group, receiver.url, "run1")
    processes.append(first)
    support.wait_for(lambda: receiver.held.is_set() or not first.alive(), 60, "the held POST")
    assert first.alive(), first.text()
    first.kill9()
    receiver.release()
    delivered_before = set(receiver.keys())
    assert 0 < len(delivered_before) < len(expected)
    assert receiver.held_key not in delivered_before

    # Run 2, same group: resumes from the committed offsets, re-reads the uncommitted tail (skipped as
    # decided) and delivers the rest, the interrupted POST included.
    second = AlertProcess(scratch_db, topic, group, receiver.url, "run2")
    processes.append(second)
    support.wait_for(lambda: len(decisions(scratch_db)) == len(distinct), 60,
                     f"{len(distinct)} decisions (log {second.log_path})")
    support.wait_for(lambda: committed(stack, group, topic) == len(stream), 30, "run 2's committed offsets")
    second_log = second.stop()
    assert records_read(second_log) < len(stream), "run 2 did not resume from run 1's committed offsets"

    counts = Counter(receiver.keys())
    assert set(counts) == expected, (f"missing {sorted(expected - set(counts))[:5]}, "
                                     f"extra {sorted(set(counts) - expected)[:5]}")
    assert [key for key, n in counts.items() if n > 1] == []
    assert receiver.held_key in counts
    stored = decisions(scratch_db)
    assert {k for k, d in stored.items() if d == "delivered"} == expected
    assert {k for k, d in stored.items() if d == "suppressed"} == distinct - expected

    # Run 3: a replay of the whole topic (a new consumer group reads from the earliest offset): no POST.
    replay_group = support.unique_name("alerts-replay")
    third = AlertProcess(scratch_db, topic, replay_group, receiver.url, "replay")
    processes.append(third)
    support.wait_for(lambda: committed(stack, replay_group, topic) == end_offset(stack, topic), 60,
                     f"the replay to reach the end of {topic} (log {third.log_path})")
    replay_log = third.stop()
    assert Counter(receiver.keys()) == counts
    assert records_read(replay_log) == len(stream)
    assert f"{len(stream):,} records read: 0 alerts delivered, 0 dead, 0 suppressed by cooldown, " \
           f"0 too old to send, {len(stream):,} repeats skipped" in replay_log


def test_a_failing_receiver_gets_the_retries_then_the_alert_is_a_dead_letter(stack, kafka_topic, scratch_db,
                                                                             receivers, processes):
    topic = kafka_topic("alerts-dead", partitions=1)
    stream = [{"symbol": s, "trade_id": f"D-{i}", "rule": "price_jump", "event_time": T0 + i,
               "price": 10.0 + i, "size": 5, "z_score": 3.5, "mean": None, "stddev": None,
               "detected_at": T0 + i + 100}
              for i, s in enumerate(SYMBOLS[:3])]
    produce(stack, topic, stream)
    receiver = receivers(status=500)
    retries = 3
    process = AlertProcess(scratch_db, topic, support.unique_name("alerts"), receiver.url, "dead",
                           alerts_retries=retries, alerts_backoff_initial_ms=20, alerts_backoff_max_ms=100)
    processes.append(process)
    support.wait_for(lambda: len(decisions(scratch_db)) == len(stream), 60,
                     f"{len(stream)} decisions (log {process.log_path})")
    log = process.stop()

    keys = [f"{a['trade_id']}:price_jump" for a in stream]
    assert Counter(receiver.keys()) == {key: retries + 1 for key in keys}
    assert all(body["id"] == key for key, body in receiver.answered)
    assert set(decisions(scratch_db).values()) == {"dead"}
    rows = support.query(scratch_db, """
        SELECT trade_id || ':' || rule, channel, reason, attempts, payload->>'id', payload->>'symbol'
        FROM alert_dead_letters ORDER BY 1""")
    assert rows == [(key, "webhook", "HTTP 500 Internal Server Error", retries + 1, key, a["symbol"])
                    for key, a in zip(keys, stream, strict=True)]
    channels = support.query(scratch_db, "SELECT channels, reason FROM alert_decisions ORDER BY trade_id")
    assert channels[0] == ({"webhook": {"ok": False, "attempts": 4, "status": 500,
                                        "error": "HTTP 500 Internal Server Error"}, "log": {"ok": True,
                                                                                            "attempts": 1}},
                           "webhook: HTTP 500 Internal Server Error")
    assert log.count("retry 1/3") == len(stream) and "dead letter for D-0:price_jump" in log


def test_dashboard_strip_query_returns_the_newest_delivered_alerts(scratch_db):
    from dashboard import queries
    from dashboard.db import Database
    from marketpulse.config import postgres_dsn

    with closing(support.pg_connect(scratch_db)) as conn, conn.cursor() as cur:
        for i, decision in enumerate(["delivered", "suppressed", "delivered", "dead", "delivered"]):
            cur.execute("""
                INSERT INTO alert_decisions
                    (trade_id, rule, symbol, event_time, price, size, z_score, decision)
                VALUES (%s, 'price_jump', 'AAPL', to_timestamp(%s), 100 + %s, 1, 3.5, %s)""",
                (f"Q{i}", 1_750_000_000 + i, i, decision))
    db = Database(postgres_dsn(scratch_db, "reader"))
    try:
        frame = queries.recent_alerts(db, limit=2)
    finally:
        db.close()
    assert list(frame["trade_id"]) == ["Q4", "Q2"]
    assert list(frame["price"]) == [104.0, 102.0]
