"""The alert service's loop: Kafka in, decisions (alerts/policy.py) stored in PostgreSQL (alerts/store.py),
alerts out through the channels (alerts/channels.py). The contract is in alerts/__init__.py."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections import Counter
from datetime import datetime

from alerts.channels import ChannelResult, HttpChannel, Interrupted, LogChannel, build_channels
from alerts.config import AlertConfig, redact
from alerts.policy import ALERT, REPEAT, STALE, CooldownPolicy, InvalidAnomaly, parse_anomaly
from alerts.store import DEAD, DELIVERED, SUPPRESSED, Decision, Store, first_line
from marketpulse.config import Settings, postgres_dsn

KAFKA_RETRY_DELAYS = (1, 2, 4, 8, 15, 30)
POLL_TIMEOUT_MS = 500
IDLE_PROBE_SECONDS = 10.0


def say(message: str) -> None:
    """One line on stderr, with the wall-clock time: what a person tailing the log reads."""
    print(f"{datetime.now():%Y-%m-%d %H:%M:%S} alerts: {message}", file=sys.stderr, flush=True)


def kafka_error_text(err: Exception) -> str:
    """kafka-python's errors print as 'KafkaTimeoutError: ...' already, or as the bare class name."""
    text = first_line(err)[:200]
    name = type(err).__name__
    return text if text.startswith(name) else f"{name}: {text}"


class StopFlag:
    """Set by SIGTERM/SIGINT. The handler only flips a boolean (an Event.set() in a signal handler can
    deadlock on the Event's own lock); `sleep` waits in short slices and returns False when asked to stop."""

    def __init__(self):
        self.requested = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request)

    def request(self, *_) -> None:
        self.requested = True

    def __bool__(self) -> bool:
        return self.requested

    def sleep(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not self.requested:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(0.1, left))
        return False


class AlertService:
    def __init__(self, settings: Settings, config: AlertConfig, stop: StopFlag | None = None):
        self.settings = settings
        self.config = config
        self.stop = stop if stop is not None else StopFlag()
        self.topic = settings.kafka.anomalies_topic
        self.bootstrap = settings.kafka.bootstrap_servers
        pg = settings.postgres
        self.store = Store(postgres_dsn(settings, "writer"), f"{pg.host}:{pg.port}/{pg.database}", say,
                           self.stop.sleep)
        channels = build_channels(config, say, self.stop.sleep)
        self.http_channels = [c for c in channels if isinstance(c, HttpChannel)]
        self.log_channel = next((c for c in channels if isinstance(c, LogChannel)), None)
        self.policy: CooldownPolicy | None = None
        self.consumer = None
        self.counts: Counter = Counter()
        self.kafka_down_since: float | None = None

    # --- start-up ----------------------------------------------------------------------------------

    def describe(self) -> str:
        parts = []
        for name in self.config.active_channels():
            url = {"webhook": self.config.webhook_url, "slack": self.config.slack_webhook_url}.get(name)
            parts.append(f"{name} {redact(url)}" if url else name)
        channels = ", ".join(parts) or "none"
        notes = "; ".join(self.config.inactive_notes())
        max_age = f"{self.config.max_age_seconds:g} s" if self.config.max_age_seconds else "off"
        return (f"topic {self.topic} on {self.bootstrap}, group {self.config.consumer_group}; cooldown "
                f"{self.config.cooldown_seconds:g} s per (symbol, rule) in event time; anomalies older than "
                f"{max_age} are not sent; channels: {channels}"
                + (f"; {notes}" if notes else "") +
                f"; retries {self.config.retries}, backoff {self.config.backoff_initial_ms} ms x"
                f"{self.config.backoff_multiplier:g} up to {self.config.backoff_max_ms} ms")

    def connect_kafka(self):
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        attempt = 0
        while not self.stop:
            try:
                consumer = KafkaConsumer(
                    bootstrap_servers=self.bootstrap.split(","), group_id=self.config.consumer_group,
                    client_id="marketpulse-alerts", enable_auto_commit=False, auto_offset_reset="earliest",
                    max_poll_records=self.config.batch_max_records, bootstrap_timeout_ms=5000,
                    # Static membership (KIP-345): a restarted service takes its own place in the group
                    # at once, instead of waiting a session timeout (45 s) for its killed predecessor.
                    # Run one instance per group: a second one would silently take the first one's place.
                    group_instance_id=f"{self.config.consumer_group}-instance",
                    # Retries and backoff of one batch can take a while; the group must not evict us.
                    max_poll_interval_ms=600_000)
                consumer.subscribe([self.topic])
                if attempt:
                    say(f"Kafka at {self.bootstrap} reachable")
                if self.topic not in consumer.topics():
                    say(f"topic {self.topic} does not exist yet; waiting for it "
                        "(the stack creates it: make up)")
                return consumer
            except KafkaError as err:
                delay = KAFKA_RETRY_DELAYS[min(attempt, len(KAFKA_RETRY_DELAYS) - 1)]
                attempt += 1
                say(f"Kafka at {self.bootstrap} unreachable ({kafka_error_text(err)}); "
                    f"retry {attempt} in {delay} s")
                self.stop.sleep(delay)
        raise Interrupted()

    # --- the loop ----------------------------------------------------------------------------------

    def run(self) -> int:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)  # our own lines say what matters
        say("starting: " + self.describe())
        try:
            self.store.check_schema()
            anchors = self.store.load_anchors()
            self.policy = CooldownPolicy(self.config.cooldown_ms, anchors, self.config.max_age_ms)
            say(f"PostgreSQL at {self.store.where}: the last alert of {len(anchors)} (symbol, rule) loaded")
            self.consumer = self.connect_kafka()
            say(f"consuming {self.topic}; offsets are committed after each batch's decisions are stored")
            self.loop()
        except Interrupted:
            pass
        finally:
            self.close()
        say("stopped: " + self.progress_text())
        return 0

    def loop(self) -> None:
        from kafka.errors import KafkaError

        last_progress = time.monotonic()
        last_records = time.monotonic()
        reported = Counter()
        while not self.stop:
            try:
                batch = self.consumer.poll(timeout_ms=POLL_TIMEOUT_MS,
                                           max_records=self.config.batch_max_records)
            except KafkaError as err:
                self.kafka_trouble(err)
                continue
            now = time.monotonic()
            if batch:
                last_records = now
                self.kafka_ok()
                self.process(batch)
            elif now - last_records > IDLE_PROBE_SECONDS:
                last_records = now
                self.probe()
            if now - last_progress >= self.config.progress_seconds and self.counts != reported:
                say(self.progress_text())
                last_progress, reported = now, Counter(self.counts)

    def process(self, batch: dict) -> None:
        parsed = []
        for tp, records in batch.items():
            for record in records:
                try:
                    parsed.append((tp, record, parse_anomaly(record.value), None))
                except InvalidAnomaly as err:
                    parsed.append((tp, record, None, str(err)))
        decided = self.store.decided(a.key for _, _, a, _ in parsed if a is not None)
        positions = {}
        try:
            for tp, record, anomaly, error in parsed:
                if self.stop:
                    break
                self.counts["read"] += 1
                if anomaly is None:
                    self.counts["invalid"] += 1
                    say(f"skipped record {tp.topic}[{tp.partition}]@{record.offset}: "
                        f"not an anomaly ({error})")
                else:
                    verdict = self.policy.decide(anomaly, anomaly.key in decided, int(time.time() * 1000))
                    decided.add(anomaly.key)
                    if verdict.action == REPEAT:
                        self.counts["repeats"] += 1
                    elif verdict.action == STALE:  # stored as suppressed, with its reason
                        self.store.record(Decision(anomaly, SUPPRESSED, verdict.reason, [], tp.partition,
                                                   record.offset))
                        self.counts["stale"] += 1
                    elif verdict.action == ALERT:
                        self.alert(anomaly, tp.partition, record.offset)
                    else:
                        self.store.record(Decision(anomaly, SUPPRESSED, verdict.reason, [], tp.partition,
                                                   record.offset))
                        self.counts[SUPPRESSED] += 1
                positions[tp] = record.offset + 1
        finally:
            if positions:
                self.commit(positions)

    def alert(self, anomaly, partition: int, offset: int) -> None:
        results: list[ChannelResult] = [channel.deliver(anomaly) for channel in self.http_channels]
        failed = [r for r in results if not r.ok]
        if self.log_channel is not None:
            results.append(self.log_channel.deliver(anomaly, results))
        elif failed:
            say(f"alert {anomaly.idempotency_key} undeliverable: " + "; ".join(r.text() for r in failed))
        decision = DEAD if failed else DELIVERED
        reason = "; ".join(f"{r.channel}: {r.error}" for r in failed) or None
        self.store.record(Decision(anomaly, decision, reason, results, partition, offset))
        self.counts[decision] += 1
        if failed:
            say(f"dead letter for {anomaly.idempotency_key} ({reason}) in alert_dead_letters")

    def commit(self, positions: dict) -> None:
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata

        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in positions.items()}
        attempt = 0
        while True:
            try:
                self.consumer.commit(offsets, timeout_ms=10_000)
                if attempt:
                    say("offsets committed")
                return
            except CommitFailedError as err:
                say(f"offsets not committed ({first_line(err)[:160]}); the group rebalanced, so these "
                    "records are read again and skipped as already decided")
                return
            except KafkaError as err:
                delay = KAFKA_RETRY_DELAYS[min(attempt, len(KAFKA_RETRY_DELAYS) - 1)]
                attempt += 1
                say(f"Kafka at {self.bootstrap} unreachable ({kafka_error_text(err)}); the decisions are "
                    f"stored, the offsets not yet: retry {attempt} in {delay} s")
                if not self.stop.sleep(delay):
                    say("stopping with offsets uncommitted: the next start reads those records again and "
                        "skips them as already decided")
                    return

    def probe(self) -> None:
        """While no records arrive: is Kafka there? (poll() alone says nothing when it is down.)"""
        from kafka.errors import KafkaError

        try:
            assignment = list(self.consumer.assignment())
            if assignment:
                self.consumer.end_offsets(assignment, timeout_ms=5000)
            elif self.topic not in self.consumer.topics():
                say(f"topic {self.topic} does not exist yet; waiting for it")
            self.kafka_ok()
        except KafkaError as err:
            self.kafka_trouble(err)

    def kafka_trouble(self, err: Exception) -> None:
        now = time.monotonic()
        if self.kafka_down_since is None:
            self.kafka_down_since = now
            say(f"Kafka at {self.bootstrap} unreachable ({kafka_error_text(err)}); "
                "waiting for it, nothing is lost (the service resumes from its committed offsets)")
        else:
            say(f"Kafka at {self.bootstrap} still unreachable after {now - self.kafka_down_since:.0f} s")
        self.stop.sleep(2)

    def kafka_ok(self) -> None:
        if self.kafka_down_since is not None:
            say(f"Kafka at {self.bootstrap} reachable again after "
                f"{time.monotonic() - self.kafka_down_since:.0f} s")
            self.kafka_down_since = None

    def progress_text(self) -> str:
        c = self.counts
        return (f"{c['read']:,} records read: {c[DELIVERED]:,} alerts delivered, {c[DEAD]:,} dead, "
                f"{c[SUPPRESSED]:,} suppressed by cooldown, {c['stale']:,} too old to send, "
                f"{c['repeats']:,} repeats skipped, "
                f"{c['invalid']:,} invalid")

    def close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False)
            except Exception:  # closing a consumer whose broker is gone: nothing left to do
                pass
        self.store.close()
