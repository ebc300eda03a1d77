-- MarketPulse window metrics in Flink SQL: the independent twin of the DataStream job's tumbling windows
-- (jobs/market_metrics.py, definitions in marketpulse/analytics/windows.py), written with Flink's own
-- operators: a window TVF aggregation, two window Top-N and window joins.
--
--   make sql SCRIPT=sql/window_metrics.sql     (this script alone, as job marketpulse-sql-window-metrics)
--   make sql SCRIPT=sql/pipeline.sql           (with indicators and top movers, as one job: what make demo runs)
--
-- The job is unbounded: sql-client.sh submits it detached and returns; cancel it from the web UI or with
-- `python -m stack flink cancel <job id>`. The $-placeholders are filled from conf/pipeline.toml and the
-- MARKETPULSE_<SECTION>_<KEY> environment overrides (stack/sql.py); no address is written here.
--
-- For every symbol and tumbling event-time window of ${windows_size_seconds} s and of
-- ${windows_short_size_seconds} s, one row of window_metrics with engine = 'sql':
--   open / close   price of the trade with the smallest / largest (event_time, trade_id), by window Top-1
--                  (sql/include/tumbling_windows.sql).
--   high = max_price, low = min_price, volume = SUM(size), notional = SUM(price * size),
--   vwap = notional / volume, trade_count / buy_count / sell_count, avg_price = AVG(price) (unweighted).
--   stddev_price   POPULATION standard deviation. Flink rewrites STDDEV_POP(price) to
--                  sqrt((SUM(p*p) - SUM(p)^2 / n) / n) in DOUBLE, which cancels catastrophically (a window of
--                  equal prices comes out as NaN about as often as 0). The script takes the same formula in
--                  exact DECIMAL arithmetic over the prices rounded to 8 decimals (the generator quotes
--                  prices in cents, so this is the exact value up to the double's last bit); only the final
--                  variance is turned into DOUBLE. Accurate to about 1e-12 relative; 0.0 for one trade.
--
-- Late trades (the rule is in sql/include/trades.sql): written to late_trades (engine = 'sql') with the
-- watermark each one met, and into no window at all.
--
-- Invalid records: the source reads every Kafka record as raw bytes (a tombstone too) and checked_trades
-- decides in SQL whether it is a valid trade, by the rules of marketpulse/trade.py; every other record goes
-- to dead_letters with engine = 'sql' and a reason, keyed by (topic, partition, offset). No record can fail
-- the job: invalid ones never reach an operator that needs a field, and never move the watermark. The
-- differences from the DataStream job's parser are listed in README (Troubleshooting: bad records).

-- include: include/trades.sql
-- include: include/tumbling_windows.sql window=long seconds=${windows_size_seconds}
-- include: include/tumbling_windows.sql window=short seconds=${windows_short_size_seconds}

-- Source: the generator's ground truth (the injected topic, JSON labels of generator/injections.py). Only
-- copied to injected_labels, for the dashboard's Detection quality view; a record that is not a label is
-- skipped (json.ignore-parse-errors). It rides in this job's statement set so it needs no slot of its own.
CREATE TABLE injected (
    kind        STRING,
    trade_id    STRING,
    symbol      STRING,
    event_time  BIGINT,
    episode     STRING
) WITH (
    'connector' = 'kafka',
    'topic' = '${kafka_injected_topic}',
    'properties.bootstrap.servers' = '${kafka_bootstrap_servers}',
    'properties.group.id' = '${sql_job_name}.${kafka_injected_topic}',
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

-- Sink: injected_labels (db/schema/009_injected_labels.sql, episode 012), upserted by (trade_id, kind).
CREATE TABLE injected_labels (
    trade_id    STRING,
    kind        STRING,
    symbol      STRING,
    event_time  TIMESTAMP(3),
    episode     STRING,
    PRIMARY KEY (trade_id, kind) NOT ENFORCED
) WITH (
    'connector' = 'marketpulse-jdbc',
    'table-name' = 'injected_labels',
    ${postgres_sink_options}
);

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
WHERE NOT is_valid AND NOT is_heartbeat;

-- Windows of both sizes, one row each, with their size.
CREATE TEMPORARY VIEW windows_of_both_sizes AS
SELECT ${windows_size_seconds} AS window_seconds, * FROM long_windows
UNION ALL
SELECT ${windows_short_size_seconds} AS window_seconds, * FROM short_windows;

-- The inserts run as one job that reads the trades topic once (and the injected topic once).
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

    -- Windows of ${windows_size_seconds} s and ${windows_short_size_seconds} s.
    INSERT INTO window_metrics
    SELECT 'sql', symbol, window_seconds, window_start, window_end, open_price, max_price, min_price,
           close_price, notional / volume, volume, notional, trade_count, buy_count, sell_count, min_price,
           max_price, avg_price,
           SQRT(CAST((sum_sq_dec - CAST(sum_dec AS DECIMAL(18, 8)) * CAST(sum_dec AS DECIMAL(18, 8))
                      / trade_count) / trade_count AS DOUBLE))
    FROM windows_of_both_sizes;

    -- The ground truth, as it is (labels without an id or kind cannot be keyed and are left out).
    INSERT INTO injected_labels
    SELECT trade_id, kind, symbol,
           CASE WHEN event_time BETWEEN 0 AND ${trade_max_event_time_ms}
                THEN CAST(TO_TIMESTAMP_LTZ(event_time, 3) AS TIMESTAMP(3)) END,
           episode
    FROM injected
    WHERE trade_id IS NOT NULL AND kind IS NOT NULL;
END;
