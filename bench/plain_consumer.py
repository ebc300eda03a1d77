"""The seeds' design as a baseline: one kafka-python consumer keeping 60 s OHLC/VWAP per symbol in a dict.

    .venv/bin/python bench/plain_consumer.py [--topic T] [--count 1000000]   # its benchmark alone
    .venv/bin/python bench/plain_consumer.py --worker --topic T               # one drain (bench/drain.py)

No Flink, no event time, no state backend, no exactly-once: read every record of the topic from the start,
parse it with the jobs' own rule (marketpulse.trade.parse_trade: heartbeats and bad records are skipped),
fold each trade into the dict of marketpulse.analytics.windows (aggregate_windows: a WindowAccumulator per
(symbol, [windows] size_seconds window)), and when the topic's end (as it was at the start) is reached, write
every window to PostgreSQL's window_metrics (engine 'plain') in one transaction, with the engines' upsert.
So "the last output row is in PostgreSQL" means for it what it means for the Flink jobs.

Without --worker this runs bench/drain.py's harness for this engine alone: the topic, a scratch database, the
figures. --worker is one drain into the configured database (MARKETPULSE_POSTGRES_DATABASE), with a progress
line every 5 s on stderr and a JSON summary as the last line on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from marketpulse.analytics.windows import WINDOW_METRICS_COLUMNS, WindowMetrics, aggregate_windows  # noqa: E402
from marketpulse.config import load_settings, postgres_dsn  # noqa: E402
from marketpulse.trade import InvalidTrade, Trade, heartbeat_time, parse_trade  # noqa: E402

ENGINE = "plain"
PROGRESS_EVERY_S = 5.0


def valid_trades(values: Iterable[bytes | None], counts: Counter) -> Iterator[Trade]:
    """The trades among Kafka values, as both jobs see them; counts gets trades, heartbeats and bad."""
    for value in values:
        try:
            trade = parse_trade(value)
        except InvalidTrade:
            counts["heartbeats" if heartbeat_time(value) is not None else "bad"] += 1
            continue
        counts["trades"] += 1
        yield trade


def windows_of(values: Iterable[bytes | None], size_seconds: int, counts: Counter) -> list[WindowMetrics]:
    """Every window of the trades among `values`: the whole of the seeds' computation, free of I/O."""
    return aggregate_windows(valid_trades(values, counts), size_seconds)


def topic_values(consumer, topic: str, progress=None) -> Iterator[bytes | None]:
    """Every value of `topic` from its beginning to its end offsets as they were when this started."""
    from kafka import TopicPartition

    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    if not partitions:
        raise SystemExit(f"topic {topic} does not exist")
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    ends = consumer.end_offsets(partitions)
    left = {tp for tp in partitions if ends[tp] > consumer.position(tp)}
    while left:
        for tp, records in consumer.poll(timeout_ms=1000).items():
            for record in records:
                yield record.value
            if progress is not None:
                progress(len(records))
            if records and records[-1].offset + 1 >= ends[tp]:
                left.discard(tp)


def write_windows(settings, rows: list[WindowMetrics]) -> None:
    """Upserts the rows as engine 'plain', the jobs' sink contract (primary key = upsert key)."""
    import psycopg2
    from psycopg2.extras import execute_values

    columns = ("engine", *WINDOW_METRICS_COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in WINDOW_METRICS_COLUMNS[4:])
    statement = (f"INSERT INTO window_metrics ({', '.join(columns)}) VALUES %s "
                 f"ON CONFLICT (engine, symbol, window_seconds, window_start) DO UPDATE SET {updates}")

    def stamp(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, UTC)

    values = [(ENGINE, row.symbol, row.window_seconds, stamp(row.window_start), stamp(row.window_end),
               *(getattr(row, c) for c in WINDOW_METRICS_COLUMNS[4:])) for row in rows]
    with closing(psycopg2.connect(postgres_dsn(settings, "writer"))) as conn:
        with conn, conn.cursor() as cur:  # one transaction: commit on leaving
            execute_values(cur, statement, values, page_size=1000)


def worker(topic: str) -> int:
    from kafka import KafkaConsumer

    settings = load_settings()
    started = time.monotonic()
    seen = {"records": 0, "printed": started}

    def progress(batch: int) -> None:
        seen["records"] += batch
        now = time.monotonic()
        if now - seen["printed"] >= PROGRESS_EVERY_S:
            seen["printed"] = now
            print(f"  plain consumer {now - started:6.1f}s  {seen['records']:>10,} records read",
                  file=sys.stderr, flush=True)

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=None,
                             enable_auto_commit=False, client_id="bench-plain-consumer")
    counts: Counter = Counter()
    try:
        rows = windows_of(topic_values(consumer, topic, progress), int(settings.windows.size_seconds), counts)
    finally:
        consumer.close()
    write_windows(settings, rows)
    print(json.dumps({"engine": ENGINE, "trades": counts["trades"], "heartbeats": counts["heartbeats"],
                      "bad": counts["bad"], "windows": len(rows),
                      "seconds_in_process": round(time.monotonic() - started, 3)}), flush=True)
    return 0


def main() -> int:
    if "--worker" in sys.argv[1:]:
        parser = argparse.ArgumentParser(description="one drain of the topic into the configured database")
        parser.add_argument("--worker", action="store_true")
        parser.add_argument("--topic", required=True)
        return worker(parser.parse_args().topic)
    from bench.lib import drain

    return drain.main(engines=(), description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
