-- Sinks of the DataStream job (jobs/market_metrics.py), rendered with marketpulse/sqltemplate.py.
-- The job registers its output streams as the temporary views datastream_windows, datastream_anomalies,
-- datastream_late_trades, datastream_dead_letters and datastream_window_anomalies (times as epoch-ms BIGINT), then runs the INSERTs below
-- in one StatementSet attached to the DataStream job, so everything is one Flink job.
-- Times: the JDBC Postgres dialect has no TIMESTAMP_LTZ, so epoch ms become TIMESTAMP(3) in the session time
-- zone (table.local-time-zone, by default the JVM's), which is also the zone the JDBC driver sends them in:
-- the timestamptz columns receive the right instants whatever that zone is.
-- Every Postgres sink declares the table's primary key: the JDBC connector then writes
-- INSERT ... ON CONFLICT DO UPDATE, and a replay after a restart rewrites the same rows.
-- 'marketpulse-jdbc' is that JDBC connector with a close() that cannot kill the TaskManager (flink-ext/).
-- The options all Postgres sinks share are written once, in marketpulse/sqltemplate.py (postgres_sink_options).

-- Window aggregates, one row per (symbol, window size, window start); final when written. Flushed within
-- 100 ms like the anomalies and the window scores: a window row is due once the watermark passes its end.
CREATE TEMPORARY TABLE window_metrics_sink (
    engine          STRING NOT NULL,
    symbol          STRING NOT NULL,
    window_seconds  INT NOT NULL,
    window_start    TIMESTAMP(3) NOT NULL,
    window_end      TIMESTAMP(3),
    `open`          DOUBLE,
    high            DOUBLE,
    low             DOUBLE,
    `close`         DOUBLE,
    vwap            DOUBLE,
    volume          BIGINT,
    notional        DOUBLE,
    trade_count     BIGINT,
    buy_count       BIGINT,
    sell_count      BIGINT,
    min_price       DOUBLE,
    max_price       DOUBLE,
    avg_price       DOUBLE,
    stddev_price    DOUBLE,
    PRIMARY KEY (engine, symbol, window_seconds, window_start) NOT ENFORCED
) WITH (
    'connector' = 'marketpulse-jdbc',
    'table-name' = 'window_metrics',
    ${postgres_low_latency_sink_options}
);

-- Anomalies, engine 'datastream'; flushed within 100 ms (low latency options), not 1 s.
-- include: ../sql/include/anomalies_postgres.sql table=anomalies_sink options=${postgres_low_latency_sink_options}

-- The same anomalies for event consumers (the anomaly message, defined once):
-- include: ../sql/include/anomalies_kafka.sql table=anomalies_kafka

-- Trades that arrived behind the watermark by more than the grace ([windows] grace_seconds).
CREATE TEMPORARY TABLE late_trades_sink (
    engine       STRING NOT NULL,
    trade_id     STRING NOT NULL,
    symbol       STRING,
    price        DOUBLE,
    `size`       BIGINT,
    side         STRING,
    event_time   TIMESTAMP(3),
    `watermark`  TIMESTAMP(3),
    PRIMARY KEY (engine, trade_id) NOT ENFORCED
) WITH (
    'connector' = 'marketpulse-jdbc',
    'table-name' = 'late_trades',
    ${postgres_sink_options}
);

-- Records that are not valid trades: one row per Kafka record (engine, topic, partition, offset), the raw
-- value as bytes (NULL for a tombstone; the table keeps the first 64 KiB and the full length,
-- db/schema/005_dead_letters_raw.sql), its SHA-1 and the reason.
CREATE TEMPORARY TABLE dead_letters_sink (
    engine           STRING NOT NULL,
    topic            STRING NOT NULL,
    kafka_partition  INT NOT NULL,
    kafka_offset     BIGINT NOT NULL,
    payload          BYTES,
    payload_sha1     STRING,
    reason           STRING,
    received_at      TIMESTAMP(3),
    PRIMARY KEY (engine, topic, kafka_partition, kafka_offset) NOT ENFORCED
) WITH (
    'connector' = 'marketpulse-jdbc',
    'table-name' = 'dead_letters',
    ${postgres_sink_options}
);

-- The multivariate detector's scored windows, one row per (symbol, window size, window start); final when
-- written, like the window rows they are computed from.
CREATE TEMPORARY TABLE window_anomalies_sink (
    symbol          STRING NOT NULL,
    window_seconds  INT NOT NULL,
    window_start    TIMESTAMP(3) NOT NULL,
    window_end      TIMESTAMP(3),
    score           DOUBLE,
    threshold       DOUBLE,
    anomalous       BOOLEAN,
    top_features    STRING,
    PRIMARY KEY (symbol, window_seconds, window_start) NOT ENFORCED
) WITH (
    'connector' = 'marketpulse-jdbc',
    'table-name' = 'window_anomalies',
    ${postgres_low_latency_sink_options}
);

-- Window rows.
INSERT INTO window_metrics_sink
SELECT 'datastream', symbol, window_seconds,
       CAST(TO_TIMESTAMP_LTZ(window_start, 3) AS TIMESTAMP(3)), CAST(TO_TIMESTAMP_LTZ(window_end, 3) AS TIMESTAMP(3)),
       `open`, high, low, `close`, vwap, volume, notional, trade_count, buy_count, sell_count,
       min_price, max_price, avg_price, stddev_price
FROM datastream_windows;

-- Anomalies to Postgres.
INSERT INTO anomalies_sink
SELECT trade_id, `rule`, symbol, CAST(TO_TIMESTAMP_LTZ(event_time, 3) AS TIMESTAMP(3)), price, `size`, z_score,
       `mean`, stddev, CAST(TO_TIMESTAMP_LTZ(detected_at, 3) AS TIMESTAMP(3)), 'datastream'
FROM datastream_anomalies;

-- Anomalies to Kafka.
INSERT INTO anomalies_kafka
SELECT symbol, trade_id, `rule`, event_time, price, `size`, z_score, `mean`, stddev, detected_at
FROM datastream_anomalies;

-- Late trades.
INSERT INTO late_trades_sink
SELECT 'datastream', trade_id, symbol, price, `size`, side, CAST(TO_TIMESTAMP_LTZ(event_time, 3) AS TIMESTAMP(3)),
       CAST(TO_TIMESTAMP_LTZ(`watermark`, 3) AS TIMESTAMP(3))
FROM datastream_late_trades;

-- Bad records.
INSERT INTO dead_letters_sink
SELECT 'datastream', topic, `partition`, `offset`, payload, payload_sha1, reason,
       CAST(TO_TIMESTAMP_LTZ(received_at, 3) AS TIMESTAMP(3))
FROM datastream_dead_letters;

-- Scored windows.
INSERT INTO window_anomalies_sink
SELECT symbol, window_seconds, CAST(TO_TIMESTAMP_LTZ(window_start, 3) AS TIMESTAMP(3)),
       CAST(TO_TIMESTAMP_LTZ(window_end, 3) AS TIMESTAMP(3)), score, threshold, anomalous, top_features
FROM datastream_window_anomalies;
