-- MarketPulse window metrics in Flink SQL: the independent twin of the DataStream job's tumbling windows
-- (jobs/market_metrics.py, definitions in marketpulse/analytics/windows.py), written with Flink's own
-- operators: a window TVF aggregation, two window Top-N and window joins.
--
--   make sql SCRIPT=sql/window_metrics.sql
--   .venv/bin/python -m stack sql sql/window_metrics.sql
--
-- The job is unbounded: sql-client.sh submits it detached and returns; cancel it from the web UI or with
-- `python -m stack flink cancel <job id>`. The $-placeholders are filled from conf/pipeline.toml and the
-- MARKETPULSE_<SECTION>_<KEY> environment overrides (stack/sql.py); no address is written here.
--
-- For every symbol and tumbling event-time window of ${windows_size_seconds} s and of
-- ${windows_short_size_seconds} s, one row of window_metrics with engine = 'sql':
--   open / close   price of the trade with the smallest / largest (event_time, trade_id). FIRST_VALUE and
--                  LAST_VALUE follow arrival order, which differs between partitions and replays, so the
--                  script takes them with a window Top-N (ROW_NUMBER ordered by event_time, trade_id, rn = 1,
--                  once ascending, once descending) and joins both to the aggregates by (window, symbol)
--                  with window joins: final rows only, state freed when the window fires.
--   high = max_price, low = min_price, volume = SUM(size), notional = SUM(price * size),
--   vwap = notional / volume, trade_count / buy_count / sell_count, avg_price = AVG(price) (unweighted).
--   stddev_price   POPULATION standard deviation. Flink rewrites STDDEV_POP(price) to
--                  sqrt((SUM(p*p) - SUM(p)^2 / n) / n) in DOUBLE, which cancels catastrophically (a window of
--                  equal prices comes out as NaN about as often as 0). The script takes the same formula in
--                  exact DECIMAL arithmetic over the prices rounded to 8 decimals (the generator quotes
--                  prices in cents, so this is the exact value up to the double's last bit); only the final
--                  variance is turned into DOUBLE. Accurate to about 1e-12 relative; 0.0 for one trade.
--
-- Late trades: a trade is late when its event time is at or behind the watermark it meets
-- (ts <= CURRENT_WATERMARK(ts)): the rule of the DataStream job (marketpulse/flink/book.py), on the same
-- watermark. Late trades go to late_trades (engine = 'sql') with that watermark, and into no window at all.
-- An on-time trade can never be dropped by a window operator: its windows end after its event time, which
-- is ahead of the watermark checked here, and the watermark the window operator sees is never ahead of it.
-- So every valid trade is counted in its windows of both sizes or in late_trades, never in both or neither.
--
-- Invalid records: the source reads every Kafka record as raw bytes (a tombstone too) and checked_trades
-- decides in SQL whether it is a valid trade, by the rules of marketpulse/trade.py; every other record goes
-- to dead_letters with engine = 'sql' and a reason, keyed by (topic, partition, offset). No record can fail
-- the job: invalid ones never reach an operator that needs a field, and never move the watermark. The
-- differences from the DataStream job's parser are listed in README (Troubleshooting: bad records).

-- Job name in the Flink web UI and REST API (the tests find the job by it).
SET 'pipeline.name' = 'marketpulse-sql-window-metrics';

-- Window boundaries are epoch-aligned: TIMESTAMP_LTZ windows are aligned in the session time zone.
SET 'table.local-time-zone' = 'UTC';

-- No source idle timeout ('table.exec.source.idle-timeout' / 'scan.watermark.idle-timeout', which the
-- DataStream job sets from [windows] idleness_seconds): with the watermark pushed into the Kafka source
-- (per-partition watermarks), Flink 2.2 + kafka connector 5.0 never resume the watermark once every
-- partition has been idle, so the first pause in the market (> idleness_seconds) would stop every window
-- for good (tests/integration/test_sql_scripts.py pauses on purpose). The price: a partition that never
-- receives a trade holds the watermark back; the generator spreads the symbols over all partitions.

-- Checkpoints commit the Kafka offsets and flush the JDBC sinks.
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
    'properties.group.id' = 'marketpulse-sql-window-metrics.${kafka_trades_topic}',
    'properties.auto.offset.reset' = 'earliest',
    'scan.startup.mode' = 'group-offsets',
    'value.format' = 'raw'
);

-- Source: the generator's ground truth (the injected topic, JSON labels of generator/injections.py). Only
-- copied to injected_labels, for the dashboard's Detection quality view; a record that is not a label is
-- skipped (json.ignore-parse-errors). It rides in this job's statement set so it needs no slot of its own.
CREATE TABLE injected (
    kind        STRING,
    trade_id    STRING,
    symbol      STRING,
    event_time  BIGINT
) WITH (
    'connector' = 'kafka',
    'topic' = '${kafka_injected_topic}',
    'properties.bootstrap.servers' = '${kafka_bootstrap_servers}',
    'properties.group.id' = 'marketpulse-sql-injected-labels.${kafka_injected_topic}',
    'properties.auto.offset.reset' = 'earliest',
    'scan.startup.mode' = 'group-offsets',
    'value.format' = 'json',
    'value.json.ignore-parse-errors' = 'true'
);

-- Sink: window_metrics (db/schema/001_core.sql), upserted by its primary key.
CREATE TABLE window_metrics (
    engine         STRING,
    symbol         STRING,
    window_seconds INT,
    window_start   TIMESTAMP(3),
    window_end     TIMESTAMP(3),
    `open`         DOUBLE,
    high           DOUBLE,
    low            DOUBLE,
    `close`        DOUBLE,
    vwap           DOUBLE,
    volume         BIGINT,
    notional       DOUBLE,
    trade_count    BIGINT,
    buy_count      BIGINT,
    sell_count     BIGINT,
    min_price      DOUBLE,
    max_price      DOUBLE,
    avg_price      DOUBLE,
    stddev_price   DOUBLE,
    PRIMARY KEY (engine, symbol, window_seconds, window_start) NOT ENFORCED
) WITH (
    'connector' = 'marketpulse-jdbc',
    'table-name' = 'window_metrics',
    ${postgres_sink_options}
);

-- Sink: late_trades (db/schema/001_core.sql), with the watermark each late trade met.
CREATE TABLE late_trades (
    engine      STRING,
    trade_id    STRING,
    symbol      STRING,
    price       DOUBLE,
    size        BIGINT,
    side        STRING,
    event_time  TIMESTAMP(3),
    `watermark` TIMESTAMP(3),
    PRIMARY KEY (engine, trade_id) NOT ENFORCED
) WITH (
    'connector' = 'marketpulse-jdbc',
    'table-name' = 'late_trades',
    ${postgres_sink_options}
);

-- Sink: dead_letters (db/schema/005_dead_letters_raw.sql): every record that is not a valid trade, one row
-- per Kafka record (engine, topic, partition, offset), the raw value as bytes (the table keeps the first
-- 64 KiB; payload_length is filled in by its trigger), its SHA-1 and the first rule it breaks.
CREATE TABLE dead_letters (
    engine          STRING,
    payload_sha1    STRING,
    payload         BYTES,
    reason          STRING,
    topic           STRING,
    received_at     TIMESTAMP(3),
    kafka_partition INT,
    kafka_offset    BIGINT,
    payload_length  INT,
    PRIMARY KEY (engine, topic, kafka_partition, kafka_offset) NOT ENFORCED
) WITH (
    'connector' = 'marketpulse-jdbc',
    'table-name' = 'dead_letters',
    ${postgres_sink_options}
);

-- Sink: injected_labels (db/schema/009_injected_labels.sql), upserted by (trade_id, kind).
CREATE TABLE injected_labels (
    trade_id    STRING,
    kind        STRING,
    symbol      STRING,
    event_time  TIMESTAMP(3),
    PRIMARY KEY (trade_id, kind) NOT ENFORCED
) WITH (
    'connector' = 'marketpulse-jdbc',
    'table-name' = 'injected_labels',
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

-- The records that are not valid trades, with the first rule each one breaks (reasons in the words of
-- marketpulse/trade.py, without the offending value).
CREATE TEMPORARY VIEW rejected_records AS
SELECT `partition`, `offset`, `value`,
       CASE
           WHEN `value` IS NULL THEN 'null value (tombstone)'
           WHEN CAST(`value` AS STRING) = '' THEN 'empty value'
           WHEN CAST(CAST(`value` AS STRING) AS BYTES) <> `value` THEN 'not UTF-8'
           WHEN CHAR_LENGTH(CAST(`value` AS STRING)) > ${trade_max_payload_bytes} THEN 'value too large'
           WHEN f_all IS NULL OR NOT REGEXP(CAST(`value` AS STRING), '\}[ \t\n\r]*\z')
                OR CHAR_LENGTH(REPLACE(CAST(`value` AS STRING), '}', '')) <> CHAR_LENGTH(CAST(`value` AS STRING)) - 1
               THEN 'malformed JSON'
           WHEN f_all NOT LIKE '[{%' THEN 'not a JSON object'
           WHEN REGEXP(CAST(`value` AS STRING), '\\u[dD][89a-fA-F]') THEN 'surrogate escape'
           WHEN f_trade_id IS NULL OR f_symbol IS NULL OR f_price IS NULL OR f_size IS NULL OR f_side IS NULL
                OR f_event_time IS NULL THEN 'missing field(s)'
           WHEN NOT REGEXP(f_trade_id, '^\["${trade_id_pattern}"\]\z') THEN 'bad trade_id'
           WHEN NOT REGEXP(f_symbol, '^\["${trade_symbol_pattern}"\]\z') THEN 'bad symbol'
           WHEN NOT COALESCE(TRY_CAST(REGEXP_EXTRACT(f_price, '^\[(-?[0-9][0-9.eE+\-]*)\]\z', 1) AS DOUBLE)
                             BETWEEN 4.9E-324 AND ${trade_max_price}, FALSE) THEN 'bad price'
           WHEN NOT REGEXP(f_size, '^\[${trade_size_pattern}\]\z') THEN 'bad size'
           WHEN f_side NOT IN (${trade_sides_json}) THEN 'bad side'
           WHEN NOT COALESCE(TRY_CAST(REGEXP_EXTRACT(f_event_time, '^\[${trade_event_time_pattern}\]\z', 1) AS BIGINT)
                             <= ${trade_max_event_time_ms}, FALSE) THEN 'bad event_time'
           WHEN CHAR_LENGTH(f_all) <> 52 + CHAR_LENGTH(f_trade_id) + CHAR_LENGTH(f_symbol) + CHAR_LENGTH(f_price)
                                      + CHAR_LENGTH(f_size) + CHAR_LENGTH(f_side) + CHAR_LENGTH(f_event_time)
               THEN 'unknown field(s)'
           ELSE 'duplicate key (or a key written with escapes)'
       END AS reason
FROM checked_trades
WHERE NOT is_valid;

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

-- Aggregates per symbol and ${windows_short_size_seconds}-second window; sum_dec and sum_sq_dec are exact.
CREATE TEMPORARY VIEW short_aggregates AS
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
FROM TABLE(TUMBLE(TABLE on_time_trades, DESCRIPTOR(ts), INTERVAL '${windows_short_size_seconds}' SECOND(3)))
GROUP BY window_start, window_end, symbol;

-- Open price per symbol and ${windows_short_size_seconds}-second window: window Top-1 by (event_time, trade_id).
CREATE TEMPORARY VIEW short_opens AS
SELECT window_start, window_end, symbol, price AS open_price
FROM (
    SELECT window_start, window_end, symbol, price,
           ROW_NUMBER() OVER (PARTITION BY window_start, window_end, symbol
                              ORDER BY event_time ASC, trade_id ASC) AS rn
    FROM TABLE(TUMBLE(TABLE on_time_trades, DESCRIPTOR(ts), INTERVAL '${windows_short_size_seconds}' SECOND(3)))
)
WHERE rn = 1;

-- Close price per symbol and ${windows_short_size_seconds}-second window: the same, descending.
CREATE TEMPORARY VIEW short_closes AS
SELECT window_start, window_end, symbol, price AS close_price
FROM (
    SELECT window_start, window_end, symbol, price,
           ROW_NUMBER() OVER (PARTITION BY window_start, window_end, symbol
                              ORDER BY event_time DESC, trade_id DESC) AS rn
    FROM TABLE(TUMBLE(TABLE on_time_trades, DESCRIPTOR(ts), INTERVAL '${windows_short_size_seconds}' SECOND(3)))
)
WHERE rn = 1;

-- One row per symbol and ${windows_short_size_seconds}-second window: the aggregates joined to open and close.
CREATE TEMPORARY VIEW short_windows AS
SELECT a.symbol, a.window_start, a.window_end, o.open_price, c.close_price, a.trade_count, a.buy_count,
       a.sell_count, a.volume, a.notional, a.min_price, a.max_price, a.avg_price, a.sum_dec, a.sum_sq_dec
FROM short_aggregates AS a
JOIN short_opens AS o
  ON a.window_start = o.window_start AND a.window_end = o.window_end AND a.symbol = o.symbol
JOIN short_closes AS c
  ON a.window_start = c.window_start AND a.window_end = c.window_end AND a.symbol = c.symbol;

-- The five inserts run as one job that reads the trades topic once (and the injected topic once).
EXECUTE STATEMENT SET
BEGIN
    -- Records that are not valid trades, keyed by where they were read: a replay rewrites the same rows.
    INSERT INTO dead_letters
    SELECT 'sql', SHA1(`value`), `value`, reason, '${kafka_trades_topic}', CAST(LOCALTIMESTAMP AS TIMESTAMP(3)),
           `partition`, `offset`, CAST(NULL AS INT)
    FROM rejected_records;

    -- Late trades, with the watermark they met.
    INSERT INTO late_trades
    SELECT 'sql', trade_id, symbol, price, size, side, CAST(ts AS TIMESTAMP(3)),
           CAST(seen_watermark AS TIMESTAMP(3))
    FROM classified_trades
    WHERE is_late;

    -- ${windows_size_seconds}-second windows.
    INSERT INTO window_metrics
    SELECT 'sql', symbol, ${windows_size_seconds}, window_start, window_end, open_price, max_price, min_price,
           close_price, notional / volume, volume, notional, trade_count, buy_count, sell_count, min_price,
           max_price, avg_price,
           SQRT(CAST((sum_sq_dec - CAST(sum_dec AS DECIMAL(18, 8)) * CAST(sum_dec AS DECIMAL(18, 8))
                      / trade_count) / trade_count AS DOUBLE))
    FROM long_windows;

    -- ${windows_short_size_seconds}-second windows.
    INSERT INTO window_metrics
    SELECT 'sql', symbol, ${windows_short_size_seconds}, window_start, window_end, open_price, max_price, min_price,
           close_price, notional / volume, volume, notional, trade_count, buy_count, sell_count, min_price,
           max_price, avg_price,
           SQRT(CAST((sum_sq_dec - CAST(sum_dec AS DECIMAL(18, 8)) * CAST(sum_dec AS DECIMAL(18, 8))
                      / trade_count) / trade_count AS DOUBLE))
    FROM short_windows;

    -- The ground truth, as it is (labels without an id or kind cannot be keyed and are left out).
    INSERT INTO injected_labels
    SELECT trade_id, kind, symbol,
           CASE WHEN event_time BETWEEN 0 AND ${trade_max_event_time_ms}
                THEN CAST(TO_TIMESTAMP_LTZ(event_time, 3) AS TIMESTAMP(3)) END
    FROM injected
    WHERE trade_id IS NOT NULL AND kind IS NOT NULL;
END;
