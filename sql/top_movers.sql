-- MarketPulse top movers in Flink SQL: per ${windows_size_seconds}-second tumbling window, the symbols that moved
-- most and traded most, with window Top-N.
--
--   make sql SCRIPT=sql/top_movers.sql
--   .venv/bin/python -m stack sql sql/top_movers.sql
--
-- Unbounded: sql-client.sh submits the job detached; cancel it from the web UI or with
-- `python -m stack flink cancel <job id>`. The $-placeholders come from conf/pipeline.toml and the
-- MARKETPULSE_<SECTION>_<KEY> environment overrides (stack/sql.py).
--
-- Per symbol and window, open/close/volume are those of window_metrics.sql (open and close by
-- (event_time, trade_id) through window Top-1 and window joins), and
--   pct_change = 100 * (close / open - 1).
-- Per window, top_movers holds three rankings of the first 5 symbols (ROW_NUMBER, ties broken by symbol so
-- the ranks never depend on arrival order):
--   'gainers'  pct_change descending
--   'losers'   pct_change ascending
--   'volume'   volume descending
-- Late trades: the rule of window_metrics.sql (which writes them to late_trades): in no window here.

-- Job name in the Flink web UI and REST API.
SET 'pipeline.name' = 'marketpulse-sql-top-movers';

-- Window boundaries are epoch-aligned: TIMESTAMP_LTZ windows are aligned in the session time zone.
SET 'table.local-time-zone' = 'UTC';

-- No source idle timeout ('table.exec.source.idle-timeout' / 'scan.watermark.idle-timeout', which the
-- DataStream job sets from [windows] idleness_seconds): with the watermark pushed into the Kafka source
-- (per-partition watermarks), Flink 2.2 + kafka connector 5.0 never resume the watermark once every
-- partition has been idle, so the first pause in the market (> idleness_seconds) would stop every window
-- for good (tests/integration/test_sql_scripts.py pauses on purpose). The price: a partition that never
-- receives a trade holds the watermark back; the generator spreads the symbols over all partitions.

-- Checkpoints commit the Kafka offsets and flush the JDBC sink.
SET 'execution.checkpointing.interval' = '${flink_checkpoint_interval_seconds} s';

-- Source: the trades topic (JSON, marketpulse/schemas/trade.schema.json). `ts` is the event time computed
-- from the record's epoch-millisecond `event_time`. The watermark, per partition, is the largest event time
-- seen minus the bounded delay minus 1 ms (Flink's BoundedOutOfOrderness watermark, as in the DataStream
-- job) minus the grace: a window fires when the DataStream job emits it.
CREATE TABLE trades (
    `value`      BYTES,
    `partition`  INT METADATA VIRTUAL,
    `offset`     BIGINT METADATA VIRTUAL,
    f_trade_id   AS JSON_QUERY(CAST(`value` AS STRING), '$.trade_id' WITH UNCONDITIONAL ARRAY WRAPPER),
    f_symbol     AS JSON_QUERY(CAST(`value` AS STRING), '$.symbol' WITH UNCONDITIONAL ARRAY WRAPPER),
    f_price      AS JSON_QUERY(CAST(`value` AS STRING), '$.price' WITH UNCONDITIONAL ARRAY WRAPPER),
    f_size       AS JSON_QUERY(CAST(`value` AS STRING), '$.size' WITH UNCONDITIONAL ARRAY WRAPPER),
    f_side       AS JSON_QUERY(CAST(`value` AS STRING), '$.side' WITH UNCONDITIONAL ARRAY WRAPPER),
    f_event_time AS JSON_QUERY(CAST(`value` AS STRING), '$.event_time' WITH UNCONDITIONAL ARRAY WRAPPER),
    f_all        AS JSON_QUERY(CAST(`value` AS STRING), '$' WITH UNCONDITIONAL ARRAY WRAPPER),
    ts AS TO_TIMESTAMP_LTZ(LEAST(${trade_max_event_time_ms}, COALESCE(TRY_CAST(
              REGEXP_EXTRACT(CAST(`value` AS STRING), '"event_time"\s*:\s*([0-9]{1,15})', 1) AS BIGINT), 0)), 3),
    WATERMARK FOR ts AS CASE WHEN ${trade_is_valid}
        THEN ts - INTERVAL '${max_out_of_orderness_seconds}' SECOND(3)
                - INTERVAL '${windows_grace_seconds}' SECOND(3) - INTERVAL '0.001' SECOND
        ELSE TO_TIMESTAMP_LTZ(0, 3) END
) WITH (
    'connector' = 'kafka',
    'topic' = '${kafka_trades_topic}',
    'properties.bootstrap.servers' = '${kafka_bootstrap_servers}',
    'properties.group.id' = 'marketpulse-sql-top-movers.${kafka_trades_topic}',
    'properties.auto.offset.reset' = 'earliest',
    'scan.startup.mode' = 'group-offsets',
    'value.format' = 'raw'
);

-- Sink: top_movers (db/schema/003_sql_analytics.sql), upserted by its primary key.
CREATE TABLE top_movers (
    ranking        STRING,
    window_seconds INT,
    window_start   TIMESTAMP(3),
    window_end     TIMESTAMP(3),
    `rank`         INT,
    symbol         STRING,
    pct_change     DOUBLE,
    `open`         DOUBLE,
    `close`        DOUBLE,
    volume         BIGINT,
    trade_count    BIGINT,
    PRIMARY KEY (ranking, window_seconds, window_start, `rank`) NOT ENFORCED
) WITH (
    'connector' = 'marketpulse-jdbc',
    'table-name' = 'top_movers',
    ${postgres_sink_options}
);

-- Every Kafka record of the topic, with is_valid: the rules of marketpulse/trade.py on the JSON text of
-- each field (f_*), the same condition as the source's WATERMARK clause (sql/include/trade_is_valid.sql),
-- so that only valid trades move event time.
CREATE TEMPORARY VIEW checked_trades AS
SELECT `partition`, `offset`, `value`, f_trade_id, f_symbol, f_price, f_size, f_side, f_event_time, f_all, ts,
       ${trade_is_valid} AS is_valid
FROM trades;

-- Valid trades only, typed (the f_* texts without their array brackets and quotes).
CREATE TEMPORARY VIEW valid_trades AS
SELECT SUBSTRING(f_trade_id FROM 3 FOR CHAR_LENGTH(f_trade_id) - 4) AS trade_id,
       SUBSTRING(f_symbol FROM 3 FOR CHAR_LENGTH(f_symbol) - 4) AS symbol,
       CAST(SUBSTRING(f_price FROM 2 FOR CHAR_LENGTH(f_price) - 2) AS DOUBLE) AS price,
       CAST(SUBSTRING(f_size FROM 2 FOR CHAR_LENGTH(f_size) - 2) AS BIGINT) AS size,
       SUBSTRING(f_side FROM 3 FOR CHAR_LENGTH(f_side) - 4) AS side,
       CAST(SUBSTRING(f_event_time FROM 2 FOR CHAR_LENGTH(f_event_time) - 2) AS BIGINT) AS event_time, ts
FROM checked_trades
WHERE is_valid;

-- Each trade with the watermark it met; at or behind it means late.
CREATE TEMPORARY VIEW classified_trades AS
SELECT trade_id, symbol, price, size, side, event_time, ts,
       CURRENT_WATERMARK(ts) AS seen_watermark,
       COALESCE(ts <= CURRENT_WATERMARK(ts), FALSE) AS is_late
FROM valid_trades;

-- The trades that go into the windows.
CREATE TEMPORARY VIEW on_time_trades AS
SELECT trade_id, symbol, price, size, side, event_time, ts,
       CAST(price AS DECIMAL(18, 8)) AS price_dec
FROM classified_trades
WHERE NOT is_late;

-- Aggregates per symbol and ${windows_size_seconds}-second window; sum_dec and sum_sq_dec are exact.
CREATE TEMPORARY VIEW long_aggregates AS
SELECT window_start, window_end, symbol,
       COUNT(*) AS trade_count,
       SUM(CASE WHEN side = 'BUY' THEN 1 ELSE 0 END) AS buy_count,
       SUM(CASE WHEN side = 'SELL' THEN 1 ELSE 0 END) AS sell_count,
       SUM(size) AS volume,
       SUM(price * size) AS notional,
       MIN(price) AS min_price,
       MAX(price) AS max_price,
       AVG(price) AS avg_price,
       SUM(price_dec) AS sum_dec,
       SUM(price_dec * price_dec) AS sum_sq_dec
FROM TABLE(TUMBLE(TABLE on_time_trades, DESCRIPTOR(ts), INTERVAL '${windows_size_seconds}' SECOND(3)))
GROUP BY window_start, window_end, symbol;

-- Open price per symbol and ${windows_size_seconds}-second window: window Top-1 by (event_time, trade_id).
CREATE TEMPORARY VIEW long_opens AS
SELECT window_start, window_end, symbol, price AS open_price
FROM (
    SELECT window_start, window_end, symbol, price,
           ROW_NUMBER() OVER (PARTITION BY window_start, window_end, symbol
                              ORDER BY event_time ASC, trade_id ASC) AS rn
    FROM TABLE(TUMBLE(TABLE on_time_trades, DESCRIPTOR(ts), INTERVAL '${windows_size_seconds}' SECOND(3)))
)
WHERE rn = 1;

-- Close price per symbol and ${windows_size_seconds}-second window: the same, descending.
CREATE TEMPORARY VIEW long_closes AS
SELECT window_start, window_end, symbol, price AS close_price
FROM (
    SELECT window_start, window_end, symbol, price,
           ROW_NUMBER() OVER (PARTITION BY window_start, window_end, symbol
                              ORDER BY event_time DESC, trade_id DESC) AS rn
    FROM TABLE(TUMBLE(TABLE on_time_trades, DESCRIPTOR(ts), INTERVAL '${windows_size_seconds}' SECOND(3)))
)
WHERE rn = 1;

-- One row per symbol and ${windows_size_seconds}-second window: the aggregates joined to open and close.
CREATE TEMPORARY VIEW long_windows AS
SELECT a.symbol, a.window_start, a.window_end, o.open_price, c.close_price, a.trade_count, a.buy_count,
       a.sell_count, a.volume, a.notional, a.min_price, a.max_price, a.avg_price, a.sum_dec, a.sum_sq_dec
FROM long_aggregates AS a
JOIN long_opens AS o
  ON a.window_start = o.window_start AND a.window_end = o.window_end AND a.symbol = o.symbol
JOIN long_closes AS c
  ON a.window_start = c.window_start AND a.window_end = c.window_end AND a.symbol = c.symbol;

-- One row per symbol and window: open, close, % change, volume.
CREATE TEMPORARY VIEW window_moves AS
SELECT a.window_start, a.window_end, a.symbol, o.open_price, c.close_price,
       100 * (c.close_price / o.open_price - 1) AS pct_change, a.volume, a.trade_count
FROM long_aggregates AS a
JOIN long_opens AS o
  ON a.window_start = o.window_start AND a.window_end = o.window_end AND a.symbol = o.symbol
JOIN long_closes AS c
  ON a.window_start = c.window_start AND a.window_end = c.window_end AND a.symbol = c.symbol;

-- Per window, every symbol's rank by % change both ways and by volume (window Top-N).
CREATE TEMPORARY VIEW gainers AS
SELECT * FROM (
    SELECT window_start, window_end, symbol, open_price, close_price, pct_change, volume, trade_count,
           ROW_NUMBER() OVER (PARTITION BY window_start, window_end
                              ORDER BY pct_change DESC, symbol ASC) AS rn
    FROM window_moves
)
WHERE rn <= 5;

-- The 5 smallest % changes per window.
CREATE TEMPORARY VIEW losers AS
SELECT * FROM (
    SELECT window_start, window_end, symbol, open_price, close_price, pct_change, volume, trade_count,
           ROW_NUMBER() OVER (PARTITION BY window_start, window_end
                              ORDER BY pct_change ASC, symbol ASC) AS rn
    FROM window_moves
)
WHERE rn <= 5;

-- The 5 largest volumes per window.
CREATE TEMPORARY VIEW volume_leaders AS
SELECT * FROM (
    SELECT window_start, window_end, symbol, open_price, close_price, pct_change, volume, trade_count,
           ROW_NUMBER() OVER (PARTITION BY window_start, window_end
                              ORDER BY volume DESC, symbol ASC) AS rn
    FROM window_moves
)
WHERE rn <= 5;

-- The three rankings into one table, in one job that reads the topic once.
EXECUTE STATEMENT SET
BEGIN
    -- Largest % change first.
    INSERT INTO top_movers
    SELECT 'gainers', ${windows_size_seconds}, window_start, window_end, CAST(rn AS INT), symbol, pct_change,
           open_price, close_price, volume, trade_count
    FROM gainers;

    -- Smallest % change first.
    INSERT INTO top_movers
    SELECT 'losers', ${windows_size_seconds}, window_start, window_end, CAST(rn AS INT), symbol, pct_change,
           open_price, close_price, volume, trade_count
    FROM losers;

    -- Largest volume first.
    INSERT INTO top_movers
    SELECT 'volume', ${windows_size_seconds}, window_start, window_end, CAST(rn AS INT), symbol, pct_change,
           open_price, close_price, volume, trade_count
    FROM volume_leaders;
END;
