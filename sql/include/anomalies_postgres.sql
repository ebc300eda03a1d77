-- The anomalies table (db/schema/001_core.sql, 013_anomalies_engine.sql) as a JDBC upsert sink, ${table}:
-- one row per (engine, trade, rule), upserted by its primary key, so a replay rewrites the same rows
-- (detected_at: the wall clock of the write). Written by the DataStream job's detector
-- (jobs/market_metrics_sinks.sql, engine 'datastream') and the SQL job's z-score rule (sql/anomalies.sql,
-- engine 'sql'), each with its own flush options. Not TEMPORARY, like anomalies_kafka.sql.
CREATE TABLE ${table} (
    trade_id     STRING NOT NULL,
    `rule`       STRING NOT NULL,
    symbol       STRING,
    event_time   TIMESTAMP(3),
    price        DOUBLE,
    `size`       BIGINT,
    z_score      DOUBLE,
    `mean`       DOUBLE,
    stddev       DOUBLE,
    detected_at  TIMESTAMP(3),
    engine       STRING NOT NULL,
    PRIMARY KEY (engine, trade_id, `rule`) NOT ENFORCED
) WITH (
    'connector' = 'marketpulse-jdbc',
    'table-name' = 'anomalies',
    ${options}
);
