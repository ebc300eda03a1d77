"""MarketPulse DataStream job: trades from Kafka -> per-symbol tumbling windows, anomalies, late and bad
records -> PostgreSQL (and anomalies -> Kafka), as ONE Flink job.

    python -m stack flink run -d -py jobs/market_metrics.py [--start-from earliest|latest|committed|<ms|ISO>]
                                                            [--group-id G] [--parallelism N]

Topology (uid in brackets; every operator has one, so savepoints map back after a redeploy):

    Kafka table source [trades-source]               Row(value bytes | None, partition, offset), one source
                                                     subtask per partition
    -> RecordBatcher (Java) [record-batches]         Row(values, partition, offsets): [flink] batch_max_*
                                                     records/bytes, held at most batch_max_delay_ms,
                                                     flushed before each checkpoint barrier
    -> ParseTrades [parse-trades]                    per symbol in the batch:
                                                     (Row(symbol, [trade tuple, ...]), event_time)
                                                     | dead letters
    -> timestamps + watermarks [trade-watermarks]    bounded out-of-orderness + idleness
    -> drop timestamp field [trade-unwrap]           Row(symbol, [trade tuple, ...])
    -> key by symbol -> TradeAnalytics [trade-analytics]
         main output  window rows (both window sizes)
         side outputs anomalies, late trades, window anomalies (the multivariate detector's scored 60 s
                      windows, scored in the timer that closes them)
    -> JDBC upsert tables + Kafka table (jobs/market_metrics_sinks.sql) in one StatementSet

Watermarks: PyFlink hands only the Java half of a WatermarkStrategy to KafkaSource, so a Python timestamp
assigner cannot run inside the source (per-split watermarks would use Kafka's record timestamps, which are
producer wall-clock times, not the trades' event_time). The watermark is therefore assigned right after
parsing, in the same operator chain, and the source chain runs with one subtask per topic partition: each
watermark generator then sees exactly one partition, which is what per-partition watermarks give. With fewer
subtasks than partitions, one subtask reading a backlog takes a fetch of one partition after another and
its watermark would race ahead of the slower partitions, turning their trades into late ones.
Late semantics, the detector on arrival and the event-time windows: see marketpulse/flink/book.py.

Batches: PyFlink's cost per element (Beam framing, Row objects built in Python, the keyed state backend's key
switch, output wrapping) is some ten times what parsing and scoring a trade costs, so the Python operators
get a batch of Kafka records per element and the keyed one a list of one symbol's trades. A batch keeps the
arrival order, and ParseTrades stamps it so that no watermark can fall between two trades of one batch
(see ParseTrades). bench/README.md, "The DataStream job's batches": 18,423 -> 44,823 trades/s on one topic.

Source: a Kafka table source with 'value.format' = 'raw' (BYTES, null for a tombstone) and the partition and
offset metadata columns, converted with to_data_stream. SimpleStringSchema cannot read a tombstone (the job
would fail and restart forever on one), and the record's coordinates make each dead letter its own row. It is
the same KafkaSource underneath (same splits, offsets committed on checkpoints); kafka_records() gives it the
uid trades-source and the partition count as parallelism, like the DataStream source had.

main() wires Kafka and the sinks; build_pipeline() is the topology on any stream of rows.KAFKA_RECORD, so
tests run it on env.from_collection(...) in a local mini-cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pyflink.common import Configuration, Duration, Types, WatermarkStrategy
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.table import StreamTableEnvironment

from marketpulse.config import Settings, load_settings
from marketpulse.flink import compat, rows
from marketpulse.flink.book import AnalyticsConfig
from marketpulse.flink.functions import (
    ANOMALIES,
    DEAD_LETTERS,
    HEARTBEAT_SYMBOL,
    LATE_TRADES,
    WINDOW_ANOMALIES,
    ParseTrades,
    TradeAnalytics,
)
from marketpulse.sqltemplate import compose, render, split_statements, sql_variables

JOB_NAME = "MarketPulse DataStream"
SINKS_SQL = Path(__file__).with_name("market_metrics_sinks.sql")
DEFAULT_GROUP_ID = "marketpulse-datastream"
MAX_PARALLELISM = 128  # fixed, so that a savepoint can be restored at another parallelism
# Views the sink SQL reads; the names are part of the contract with market_metrics_sinks.sql.
VIEWS = {
    "windows": "datastream_windows",
    "anomalies": "datastream_anomalies",
    "late_trades": "datastream_late_trades",
    "dead_letters": "datastream_dead_letters",
    "window_anomalies": "datastream_window_anomalies",
}


# --- options -----------------------------------------------------------------------------------------

def parse_start_from(text: str) -> str | int:
    """'earliest' | 'latest' | 'committed' | epoch ms (int) from digits or ISO 8601 (no zone = UTC)."""
    value = text.strip().lower()
    if value in ("earliest", "latest", "committed"):
        return value
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--start-from {text!r}: expected earliest, latest, committed, epoch ms or an ISO 8601 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def startup_options(start_from: str | int) -> dict[str, str]:
    """The Kafka table source's options for --start-from."""
    if start_from == "earliest":
        return {"scan.startup.mode": "earliest-offset"}
    if start_from == "latest":
        return {"scan.startup.mode": "latest-offset"}
    if start_from == "committed":
        # The group's committed offsets (committed on each checkpoint); the beginning for a new group.
        return {"scan.startup.mode": "group-offsets", "properties.auto.offset.reset": "earliest"}
    # Backfill: the first record whose Kafka timestamp (producer time) is >= start_from.
    return {"scan.startup.mode": "timestamp", "scan.startup.timestamp-millis": str(start_from)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="market_metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--start-from", type=parse_start_from, default="committed",
                        help="earliest | latest | committed (the group's offsets, else earliest) | "
                             "epoch ms or ISO 8601 time of the Kafka record timestamps (default: committed); "
                             "ignored for partitions restored from a savepoint or checkpoint")
    parser.add_argument("--group-id", default=DEFAULT_GROUP_ID,
                        help=f"consumer group (default {DEFAULT_GROUP_ID})")
    parser.add_argument("--parallelism", type=int, default=None,
                        help="parallelism of the keyed operator and the sinks (default: [flink] parallelism)")
    parser.add_argument("--source-parallelism", type=int, default=None,
                        help="subtasks of the source/parse/watermark chain: the topic's partitions (the "
                             "default, and the only count accepted: source_subtasks)")
    parser.add_argument("--env", action="append", default=[], metavar="MARKETPULSE_NAME=VALUE",
                        help="a setting override, as the environment variable would give it (repeatable); "
                             "stack/jarrun.py passes the submitter's, since the program then runs in the "
                             "JobManager's environment")
    parser.add_argument("--python-bundle-ms", type=int, default=None,
                        help="python.fn-execution.bundle.time: the most the Python operators hold their "
                             "output back (default: [flink] python_bundle_time_ms)")
    return parser.parse_args(argv)


def env_overrides(items: list[str]) -> dict[str, str]:
    """--env MARKETPULSE_NAME=VALUE items as a mapping; anything else is a usage error."""
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("MARKETPULSE_"):
            raise SystemExit(f"market_metrics: --env wants MARKETPULSE_NAME=VALUE, got {item!r}")
        overrides[name] = value
    return overrides


# --- topology ----------------------------------------------------------------------------------------

@dataclass
class Outputs:
    windows: DataStream       # rows.WINDOW_METRICS
    anomalies: DataStream     # rows.ANOMALY
    late_trades: DataStream   # rows.LATE_TRADE
    dead_letters: DataStream  # rows.DEAD_LETTER
    window_anomalies: DataStream  # rows.WINDOW_ANOMALY


def watermark_strategy(settings: Settings) -> WatermarkStrategy:
    windows = settings.windows
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(windows.max_out_of_orderness_ms))
    if windows.idleness_seconds > 0:
        strategy = strategy.with_idleness(Duration.of_seconds(windows.idleness_seconds))
    return strategy


@dataclass(frozen=True)
class Batching:
    """How Kafka records are batched before the Python operators (io.marketpulse.flink.RecordBatcher); the
    values are [flink] batch_max_* of conf/pipeline.toml."""
    max_records: int
    max_bytes: int
    max_delay_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Batching:
        flink = settings.flink
        return cls(int(flink.batch_max_records), int(flink.batch_max_bytes), int(flink.batch_max_delay_ms))


def batch_symbol(trades: list) -> str:
    """The key of a batch of one symbol's trades (the public key_by twin's key selector)."""
    return trades[0][1] if trades else HEARTBEAT_SYMBOL


def build_pipeline(
    raw: DataStream,
    *,
    topic: str,
    config: AnalyticsConfig,
    watermarks: WatermarkStrategy,
    batching: Batching,
    source_parallelism: int | None = None,
) -> Outputs:
    """The job's topology on a stream of rows.KAFKA_RECORD (Kafka records or a test collection)."""
    batches = compat.batch_records(raw, max_records=batching.max_records, max_bytes=batching.max_bytes,
                                   max_delay_ms=batching.max_delay_ms, parallelism=source_parallelism,
                                   uid="record-batches", name="batch records")
    # Row(values, partition, offsets): up to max_records records of one partition
    parsed = (batches.process(ParseTrades(topic), rows.TIMESTAMPED_TRADES)
              .name("parse + validate trades").uid("parse-trades"))
    if source_parallelism:
        parsed.set_parallelism(source_parallelism)
    # (Row(symbol, [trade tuple, ...]), event_time)
    trades = compat.assign_event_time(parsed, watermarks, value_type=rows.KEYED_TRADES,
                                      parallelism=source_parallelism,
                                      uids=("trade-watermarks", "trade-unwrap"),
                                      names=("event time + watermarks", "unwrap trades"))
    # Row(symbol, [(trade_id, symbol, price, size, side, event_time), ...]), event-time stamped
    analytics = (compat.key_by_first_field(trades, Types.PICKLED_BYTE_ARRAY(), batch_symbol)
                 .process(TradeAnalytics(config), rows.WINDOW_METRICS)
                 .name("windows + anomaly detector per symbol").uid("trade-analytics"))
    # window rows | anomalies | late trades | scored windows
    return Outputs(
        windows=analytics,
        anomalies=analytics.get_side_output(ANOMALIES),
        late_trades=analytics.get_side_output(LATE_TRADES),
        dead_letters=parsed.get_side_output(DEAD_LETTERS),
        window_anomalies=analytics.get_side_output(WINDOW_ANOMALIES),
    )


# --- Kafka and sinks ---------------------------------------------------------------------------------


def source_subtasks(requested: int | None, topic: str, partitions: int) -> int:
    """The source chain's subtasks: one per partition of the topic, and no other count. Its watermarks are
    made per subtask after the source, so a subtask reading two partitions runs ahead of the slower one and
    its trades become late, and a subtask reading none holds event time back for ever. Measured
    (bench/datastream_drain.py, 4 partitions): 1 or 2 subtasks wrote 26 and 167 of 259 windows of 60 s, 6
    wrote none."""
    if requested and requested != partitions:
        raise SystemExit(f"market_metrics: --source-parallelism {requested}, but {topic!r} has {partitions} "
                         "partitions: the job needs exactly one source subtask per partition (its watermarks "
                         "are made per subtask, not per partition; see source_subtasks)")
    return partitions


def topic_partitions(settings: Settings, topic: str) -> int:
    """Partitions of the topic, asked from the broker at submit time; the configured count if unknown."""
    try:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, request_timeout_ms=10000)
        try:
            partitions = consumer.partitions_for_topic(topic)
        finally:
            consumer.close()
        if partitions:
            return len(partitions)
    except Exception as err:  # the job still runs; say why the default is used
        print(f"market_metrics: partitions of {topic!r} unknown ({err}); using "
              f"[kafka] trades_partitions", file=sys.stderr)
    return int(settings.kafka.trades_partitions)


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def kafka_records(t_env: StreamTableEnvironment, settings: Settings, topic: str, group_id: str,
                  start_from: str | int, parallelism: int) -> DataStream:
    """The topic as a stream of rows.KAFKA_RECORD, read by `parallelism` source subtasks under the uid
    trades-source (the conversion operators between the source and ParseTrades get the same parallelism,
    so the chain stays forward-connected: one partition per subtask up to the watermark assigner)."""
    options = {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": settings.kafka.bootstrap_servers,
        "properties.group.id": group_id,
        "properties.commit.offsets.on.checkpoint": "true",
        "scan.topic-partition-discovery.interval": "60000 ms",
        "value.format": "raw",
        **startup_options(start_from),
    }
    t_env.execute_sql(
        "CREATE TEMPORARY TABLE trades_raw (`value` BYTES, `partition` INT METADATA VIRTUAL, "
        "`offset` BIGINT METADATA VIRTUAL) WITH ("
        + ", ".join(f"{sql_string(key)} = {sql_string(value)}" for key, value in options.items()) + ")")
    stream = t_env.to_data_stream(t_env.from_path("trades_raw"))
    compat.set_source_parallelism(stream, parallelism, source_uid="trades-source",
                                  source_name=f"Kafka {topic}")
    return stream


def sink_statements(settings: Settings) -> list[str]:
    """The sink script's statements: its includes resolved (the anomaly message is shared with the SQL job),
    its placeholders filled."""
    return split_statements(render(compose(SINKS_SQL), sql_variables(settings)))


def add_sinks(t_env: StreamTableEnvironment, outputs: Outputs, settings: Settings):
    """Registers the output views, creates the sink tables and returns the StatementSet of the INSERTs."""
    for field, view in VIEWS.items():
        t_env.create_temporary_view(view, t_env.from_data_stream(getattr(outputs, field)))
    statement_set = t_env.create_statement_set()
    for statement in sink_statements(settings):
        if statement.upper().startswith("INSERT"):
            statement_set.add_insert_sql(statement)
        else:
            t_env.execute_sql(statement)
    return statement_set


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    compat.check_pyflink_version()
    os.environ.update(env_overrides(args.env))  # before anything reads a setting
    settings = load_settings()
    topic = settings.kafka.trades_topic
    parallelism = args.parallelism or int(settings.flink.parallelism)
    source_parallelism = source_subtasks(args.source_parallelism, topic, topic_partitions(settings, topic))

    job_config = Configuration()
    job_config.set_string("python.fn-execution.bundle.time",
                          str(args.python_bundle_ms or int(settings.flink.python_bundle_time_ms)))
    env = StreamExecutionEnvironment.get_execution_environment(job_config)
    env.set_parallelism(parallelism)
    env.set_max_parallelism(MAX_PARALLELISM)
    # A network buffer between two operators goes out when full or after this long: at demo rates buffers
    # never fill, so every hop (source -> parse -> keyed detector -> sinks) adds up to this to an anomaly.
    env.set_buffer_timeout(int(settings.flink.buffer_timeout_ms))
    env.enable_checkpointing(int(settings.flink.checkpoint_interval_seconds) * 1000)
    t_env = StreamTableEnvironment.create(env)
    # Stable uids for the operators the planner adds (conversions, sinks), like ours: the same node ids
    # whether this runs in a fresh `flink run` client or in a JobManager that planned jobs before.
    t_env.get_config().set("table.exec.uid.generation", "ALWAYS")
    compat.reset_planner_node_ids(t_env)

    raw = kafka_records(t_env, settings, topic, args.group_id, args.start_from, source_parallelism)
    outputs = build_pipeline(raw, topic=topic,
                             config=AnalyticsConfig.from_settings(settings),
                             watermarks=watermark_strategy(settings), source_parallelism=source_parallelism,
                             batching=Batching.from_settings(settings))
    add_sinks(t_env, outputs, settings).attach_as_datastream()
    print(f"market_metrics: topic {topic} ({source_parallelism} source subtasks), parallelism {parallelism}, "
          f"group {args.group_id}, start {args.start_from}, database {settings.postgres.database}",
          flush=True)
    env.execute(JOB_NAME)


if __name__ == "__main__":
    main()
