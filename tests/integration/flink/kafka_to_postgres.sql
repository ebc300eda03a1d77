-- Connectivity probe for the integration tests: Kafka -> Flink SQL -> Postgres JDBC upsert, run with
-- `python -m stack sql tests/integration/flink/kafka_to_postgres.sql` (sql-client.sh -f). ${topic} and
-- ${table} are filled in by the test; the connection settings come from conf/pipeline.toml.

-- Wait for the bounded job to finish so the test can assert the rows right after.
SET 'table.dml-sync' = 'true';
SET 'pipeline.name' = 'marketpulse-probe-sql';

-- Source: the trades topic, read from the start up to the offsets it had when the job started.
CREATE TABLE probe_trades (
    trade_id   STRING,
    symbol     STRING,
    price      DOUBLE,
    size       BIGINT,
    side       STRING,
    event_time BIGINT,
    ts AS TO_TIMESTAMP_LTZ(event_time, 3),
    WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
    'connector' = 'kafka',
    'topic' = '${topic}',
    'properties.bootstrap.servers' = '${kafka_bootstrap_servers}',
    'properties.group.id' = 'probe-sql-${topic}',
    'scan.startup.mode' = 'earliest-offset',
    'scan.bounded.mode' = 'latest-offset',
    'format' = 'json',
    'json.ignore-parse-errors' = 'true'
);

-- Sink: upsert by trade id, the same key as the Postgres table.
CREATE TABLE probe_sink (
    trade_id STRING,
    symbol   STRING,
    price    DOUBLE,
    size     BIGINT,
    PRIMARY KEY (trade_id) NOT ENFORCED
) WITH (
    'connector' = 'jdbc',
    'url' = '${postgres_jdbc_url}',
    'table-name' = '${table}',
    ${postgres_credentials}
);

-- Valid rows only: a malformed record arrives as all-NULL columns.
EXECUTE STATEMENT SET
BEGIN
    INSERT INTO probe_sink
    SELECT trade_id, symbol, price, size FROM probe_trades WHERE trade_id IS NOT NULL AND price > 0;
END;
