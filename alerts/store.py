"""The alert service's state in PostgreSQL (db/schema/006_alerts.sql): which (trade_id, rule) were decided,
the last alert of each (symbol, rule), and the decisions themselves with their dead letters.

Every operation waits out a PostgreSQL outage: it logs one line, retries with backoff (1, 2, 4 ... 30 s)
on a fresh connection, and never gives up unless the service is asked to stop."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg2
import psycopg2.extras

from alerts.channels import ChannelResult, Interrupted
from alerts.policy import Anchor, Anomaly

DELIVERED, SUPPRESSED, DEAD = "delivered", "suppressed", "dead"
RETRY_DELAYS = (1, 2, 4, 8, 15, 30)


class SchemaMissing(RuntimeError):
    """The database has no alert tables: the schema file 006 was not applied."""


@dataclass
class Decision:
    anomaly: Anomaly
    decision: str                      # DELIVERED | SUPPRESSED | DEAD
    reason: str | None = None
    results: list[ChannelResult] = field(default_factory=list)
    partition: int | None = None
    offset: int | None = None

    def channels_json(self) -> dict:
        return {result.channel: result.as_json() for result in self.results}

    def dead_letters(self) -> list[ChannelResult]:
        return [result for result in self.results if not result.ok]


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


class Store:
    def __init__(self, dsn: str, where: str, say: Callable[[str], None], sleep: Callable[[float], bool]):
        self.dsn = dsn
        self.where = where
        self.say = say
        self.sleep = sleep
        self._conn = None

    # --- connection and retries --------------------------------------------------------------------

    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(self.dsn, connect_timeout=5, application_name="marketpulse-alerts",
                                          options="-c TimeZone=UTC")
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
        self._conn = None

    def _retrying(self, what: str, operation: Callable):
        attempt = 0
        while True:
            try:
                conn = self._connection()
                with conn, conn.cursor() as cur:  # one transaction: commit on success, rollback on error
                    result = operation(cur)
                if attempt:
                    self.say(f"PostgreSQL at {self.where} is back; {what} done")
                return result
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as err:
                self._drop()
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                attempt += 1
                self.say(f"PostgreSQL at {self.where} unreachable ({first_line(err)}); {what} waits, "
                         f"retry {attempt} in {delay} s")
                if not self.sleep(delay):
                    raise Interrupted() from None

    def close(self) -> None:
        self._drop()

    # --- operations --------------------------------------------------------------------------------

    def check_schema(self) -> None:
        def check(cur):
            cur.execute("SELECT to_regclass('public.alert_decisions') IS NOT NULL, "
                        "to_regclass('public.alert_dead_letters') IS NOT NULL")
            return all(cur.fetchone())

        if not self._retrying("the schema check", check):
            raise SchemaMissing(f"the database {self.where} has no alert_decisions/alert_dead_letters "
                                "tables: apply db/schema/006_alerts.sql (make up, or python -m stack init)")

    def load_anchors(self) -> dict[tuple[str, str], Anchor]:
        """The latest alert (delivered or dead) of each (symbol, rule): where each cooldown stands."""
        def load(cur):
            cur.execute("""
                SELECT DISTINCT ON (symbol, rule) symbol, rule, event_time, trade_id
                FROM alert_decisions WHERE decision <> 'suppressed'
                ORDER BY symbol, rule, event_time DESC, trade_id DESC""")
            return {(symbol, rule): Anchor(_epoch_ms(event_time), trade_id)
                    for symbol, rule, event_time, trade_id in cur.fetchall()}

        return self._retrying("loading the cooldowns", load)

    def decided(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of `keys` (trade_id, rule) that have a decision already."""
        keys = list(set(keys))
        if not keys:
            return set()

        def find(cur):
            psycopg2.extras.execute_values(cur, """
                SELECT d.trade_id, d.rule FROM alert_decisions d
                JOIN (VALUES %s) AS k (trade_id, rule) ON d.trade_id = k.trade_id AND d.rule = k.rule""",
                keys, page_size=1000)
            return {(trade_id, rule) for trade_id, rule in cur.fetchall()}

        return self._retrying("the dedup lookup", find)

    def record(self, decision: Decision) -> bool:
        """Stores one decision and its dead letters in one transaction; False if the key had one already
        (another instance got there first: that one stands)."""
        a = decision.anomaly

        def write(cur):
            cur.execute("""
                INSERT INTO alert_decisions (trade_id, rule, symbol, event_time, price, size, z_score,
                                             decision, reason, channels, kafka_partition, kafka_offset)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (trade_id, rule) DO NOTHING""",
                (a.trade_id, a.rule, a.symbol, _timestamp(a.event_time), a.price, a.size, a.z_score,
                 decision.decision, decision.reason, json.dumps(decision.channels_json()),
                 decision.partition, decision.offset))
            if cur.rowcount == 0:
                return False
            for result in decision.dead_letters():
                cur.execute("""
                    INSERT INTO alert_dead_letters (trade_id, rule, channel, payload, reason, attempts)
                    VALUES (%s, %s, %s, %s, %s, %s)""",
                    (a.trade_id, a.rule, result.channel, json.dumps(result.payload or {}),
                     result.error or "unknown", result.attempts))
            return True

        return self._retrying(f"recording {a.idempotency_key}", write)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timestamp(epoch_ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=epoch_ms)


def _epoch_ms(value: datetime) -> int:
    return (value - EPOCH) // timedelta(milliseconds=1)
