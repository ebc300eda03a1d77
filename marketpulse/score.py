"""Detection quality of a run: `python -m marketpulse.score [--from T] [--to T]` (`make score`).

Joins the `anomalies` table (what one engine detected: --engine, by default the DataStream job's detector;
`sql` is the Flink SQL job's price z-score rule, sql/anomalies.sql) with the generator's ground truth on the
injected topic ([kafka] injected_topic: one label per injected trade) and prints, per rule and per injected
kind, precision, recall, F1 and the median detection delay (detected_at - event_time), by
marketpulse.analytics.scoring; and, for the datastream engine, the multivariate window detector's row from
the anomalous windows of `window_anomalies` (per window: see scoring's docstring). --from/--to (epoch ms or
ISO 8601, naive = UTC) restrict both sides to trades whose event time, and windows whose start, is in
[from, to). The topic is read from its first to its last offset at the start.
"""

from __future__ import annotations

import argparse
import json
import sys

from marketpulse.analytics.scoring import DETECTOR_ENGINE, LABEL_KINDS, score
from marketpulse.config import ConfigError, load_settings, postgres_dsn
from marketpulse.times import parse_timestamp


class ScoreError(RuntimeError):
    """A source of the score cannot be read; the message says which and why."""


def parse_time(text: str) -> int:
    """An argparse type: epoch ms or ISO 8601 (marketpulse.times)."""
    try:
        return parse_timestamp(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def in_range(event_time: int, start: int | None, end: int | None) -> bool:
    return (start is None or event_time >= start) and (end is None or event_time < end)


def read_labels(bootstrap_servers: str, topic: str, timeout_s: float = 30.0) -> list[dict]:
    """Every anomaly label on the topic, from its first offset to its end offset when called."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                                 request_timeout_ms=int(timeout_s * 1000))
    except KafkaError as err:
        raise ScoreError(f"cannot reach Kafka at {bootstrap_servers}: {err}") from None
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ScoreError(f"topic {topic!r} not found on {bootstrap_servers}: no ground truth to score "
                             "against (did the generator run with --anomaly-rate?)")
        assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end = consumer.end_offsets(assigned)
        labels = []
        while any(consumer.position(tp) < end[tp] for tp in assigned):
            batch = consumer.poll(timeout_ms=int(timeout_s * 1000))
            if not batch:
                raise ScoreError(f"no records from {topic!r} for {timeout_s:g} s before its end offsets")
            for records in batch.values():
                for record in records:
                    try:
                        label = json.loads(record.value)
                    except (TypeError, ValueError):
                        continue  # not a label: nothing to score against
                    if isinstance(label, dict) and label.get("kind") in LABEL_KINDS:
                        labels.append(label)
        return labels
    finally:
        consumer.close()


def read_detections(dsn: str, start: int | None, end: int | None,
                    engine: str = DETECTOR_ENGINE) -> list[tuple[str, str, int, int]]:
    """(trade_id, rule, event_time ms, detected_at ms) of one engine's rows of the anomalies table in
    [start, end)."""
    import psycopg2

    query = ("SELECT trade_id, rule, (extract(epoch FROM event_time) * 1000)::bigint, "
             "(extract(epoch FROM detected_at) * 1000)::bigint FROM anomalies WHERE engine = %(engine)s "
             "AND (%(start)s::bigint IS NULL OR event_time >= to_timestamp(%(start)s / 1000.0)) "
             "AND (%(end)s::bigint IS NULL OR event_time < to_timestamp(%(end)s / 1000.0))")
    try:
        with psycopg2.connect(dsn, connect_timeout=10) as connection, connection.cursor() as cursor:
            cursor.execute(query, {"start": start, "end": end, "engine": engine})
            return cursor.fetchall()
    except psycopg2.Error as err:
        raise ScoreError(f"cannot read the anomalies table: {str(err).strip()}") from None


def read_window_anomalies(dsn: str, start: int | None, end: int | None) -> tuple[int, list] | None:
    """(windows scored, [(symbol, start ms, end ms) of the anomalous ones]) of window_anomalies with a start
    in [start, end); None without the table (a database from before db/schema/012)."""
    import psycopg2

    bounds = ("(%(start)s::bigint IS NULL OR window_start >= to_timestamp(%(start)s / 1000.0)) "
              "AND (%(end)s::bigint IS NULL OR window_start < to_timestamp(%(end)s / 1000.0))")
    try:
        with psycopg2.connect(dsn, connect_timeout=10) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('window_anomalies') IS NOT NULL")
            if not cursor.fetchone()[0]:
                return None
            params = {"start": start, "end": end}
            cursor.execute(f"SELECT count(*) FROM window_anomalies WHERE {bounds}", params)
            scored = cursor.fetchone()[0]
            cursor.execute("SELECT symbol, (extract(epoch FROM window_start) * 1000)::bigint, "
                           "(extract(epoch FROM window_end) * 1000)::bigint FROM window_anomalies "
                           f"WHERE anomalous AND {bounds}", params)
            return scored, cursor.fetchall()
    except psycopg2.Error as err:
        raise ScoreError(f"cannot read the window_anomalies table: {str(err).strip()}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marketpulse.score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="start", type=parse_time, help="first event time (inclusive)")
    parser.add_argument("--to", dest="end", type=parse_time, help="last event time (exclusive)")
    parser.add_argument("--topic", help="the ground-truth topic (default: [kafka] injected_topic)")
    parser.add_argument("--engine", default=DETECTOR_ENGINE,
                        help="whose anomalies: datastream (the detector, default) or sql (its z-score rule)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        topic = args.topic or settings.kafka.injected_topic
        labels = [label for label in read_labels(settings.kafka.bootstrap_servers, topic)
                  if in_range(int(label.get("event_time", -1)), args.start, args.end)]
        detections = read_detections(postgres_dsn(settings, "reader"), args.start, args.end, args.engine)
        # The window detector is the DataStream job's: its row belongs to that engine's score.
        windows = (read_window_anomalies(postgres_dsn(settings, "reader"), args.start, args.end)
                   if args.engine == DETECTOR_ENGINE else None)
    except (ConfigError, ScoreError) as err:
        print(f"score: {err}", file=sys.stderr)
        return 1
    scored = "" if windows is None else f", {windows[0]} scored windows ({len(windows[1])} anomalous)"
    span = f", event time [{args.start}, {args.end})" if args.start or args.end else ""
    engine = "" if args.engine == DETECTOR_ENGINE else f" of engine {args.engine}"
    print(f"{len(detections)} anomaly rows{engine}{scored} in database {settings.postgres.database}, "
          f"{len(labels)} injected anomaly labels on {topic}{span}")
    print(score(detections, labels, None if windows is None else windows[1]).render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
