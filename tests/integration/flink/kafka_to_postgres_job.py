"""Connectivity probe for the integration tests: a PyFlink DataStream job that reads trades from a Kafka
topic with KafkaSource and upserts them into a Postgres table through a Table API JDBC sink.

    flink run -py tests/integration/flink/kafka_to_postgres_job.py --topic T --table TBL

It is bounded (stops at the offsets the topic had at start) so the test can wait for it to finish."""

from __future__ import annotations

import argparse

from pyflink.common import Row, Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource
from pyflink.table import StreamTableEnvironment

from marketpulse.config import load_settings, postgres_jdbc_url
from marketpulse.sqltemplate import postgres_credentials, with_options
from marketpulse.trade import InvalidTrade, parse_trade


def parse_or_none(payload: str):
    try:
        trade = parse_trade(payload)
    except InvalidTrade:
        return None
    return Row(trade.trade_id, trade.symbol, trade.price, trade.size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", required=True)
    parser.add_argument("--table", required=True)
    args = parser.parse_args()
    settings = load_settings()

    env = StreamExecutionEnvironment.get_execution_environment()
    t_env = StreamTableEnvironment.create(env)
    source = (KafkaSource.builder()
              .set_bootstrap_servers(settings.kafka.bootstrap_servers)
              .set_topics(args.topic)
              .set_group_id(f"probe-{args.topic}")
              .set_starting_offsets(KafkaOffsetsInitializer.earliest())
              .set_bounded(KafkaOffsetsInitializer.latest())
              .set_value_only_deserializer(SimpleStringSchema())
              .build())
    row_type = Types.ROW_NAMED(["trade_id", "symbol", "price", "size"],
                               [Types.STRING(), Types.STRING(), Types.DOUBLE(), Types.LONG()])
    trades = (env.from_source(source, WatermarkStrategy.no_watermarks(), "kafka-trades").uid("probe-source")
              .map(parse_or_none, Types.PICKLED_BYTE_ARRAY()).uid("probe-parse")
              .filter(lambda row: row is not None).uid("probe-filter")
              .map(lambda row: row, row_type).uid("probe-to-row"))
    # (trade_id, symbol, price, size)
    options = with_options({"connector": "jdbc", "url": postgres_jdbc_url(settings), "table-name": args.table,
                            **postgres_credentials(settings)})
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE sink (
            trade_id STRING, symbol STRING, price DOUBLE, size BIGINT,
            PRIMARY KEY (trade_id) NOT ENFORCED
        ) WITH ({options})""")
    t_env.from_data_stream(trades).execute_insert("sink").wait()


if __name__ == "__main__":
    main()
