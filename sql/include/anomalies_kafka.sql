-- The anomaly message on the anomalies topic, which the alert service reads (alerts/policy.py, parse_anomaly):
-- key = symbol (raw UTF-8), value = JSON with epoch-ms times. Written by the DataStream job's detector
-- (jobs/market_metrics_sinks.sql) and the SQL job's indicator alert rules (sql/indicators.sql), as ${table}.
-- At-least-once: a restart may repeat a message; (trade_id, rule) identifies it.
-- Not TEMPORARY: a compiled plan keeps only the identifier of a temporary table, so the SQL Gateway's
-- EXECUTE PLAN (stack/sqlgateway.py), in a session without the script's CREATEs, could not resolve it and
-- compiled the whole pipeline again at every submission (measured: "Cannot resolve table
-- ...indicator_alerts_kafka ... compiled as a temporary table", 25-50 s instead of running the plan).
CREATE TABLE ${table} (
    symbol       STRING,
    trade_id     STRING,
    `rule`       STRING,
    event_time   BIGINT,
    price        DOUBLE,
    `size`       BIGINT,
    z_score      DOUBLE,
    `mean`       DOUBLE,
    stddev       DOUBLE,
    detected_at  BIGINT
) WITH (
    'connector' = 'kafka',
    'topic' = '${kafka_anomalies_topic}',
    'properties.bootstrap.servers' = '${kafka_bootstrap_servers}',
    'key.format' = 'raw',
    'key.fields' = 'symbol',
    'value.format' = 'json',
    'value.fields-include' = 'ALL',
    'sink.delivery-guarantee' = 'at-least-once',
    -- sent within 5 ms (the client's batching delay), not held for a fuller batch
    'properties.linger.ms' = '5'
);
