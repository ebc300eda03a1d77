-- The trades every script reads, defined once: the job's settings, the Kafka source and the chain of views
-- from raw record to on-time trade. Each script in sql/ starts with `-- include: include/trades.sql`; the
-- renderer (marketpulse/sqltemplate.py, compose) puts it in once per job, however many scripts include it.
--
-- Late trades: a trade is late when its event time is at or behind the watermark it meets
-- (ts <= CURRENT_WATERMARK(ts)): the rule of the DataStream job (marketpulse/flink/book.py), on the same
-- watermark. Late trades go to late_trades (window_metrics.sql) with that watermark, and into no window at
-- all. An on-time trade can never be dropped by a window operator: its windows end after its event time,
-- which is ahead of the watermark checked here, and the watermark the window operator sees is never ahead
-- of it. So every valid trade is counted in its windows of every size or in late_trades, never in both or
-- neither, and every result of the job (windows, bars, sliding averages, rankings) counts the same trades.

-- Job name in the Flink web UI and REST API (the tests find the job by it): marketpulse-sql-<script name>.
SET 'pipeline.name' = '${sql_job_name}';

-- Window boundaries are epoch-aligned: TIMESTAMP_LTZ windows are aligned in the session time zone.
SET 'table.local-time-zone' = 'UTC';

-- Every result reads the same views (checked_trades, classified_trades, on_time_trades), but each statement
-- expands them anew, and by default the optimizer merges the views into each result's own Calc behind the
-- source: the JSON parsing and the validity rule ran once per result for every record (7 times in the
-- pipeline). Finding equal sub-plans by their digest makes each view one operator whose output every result
-- shares. Measured on sql/pipeline.sql, 200,000 trades (bench/sql_drain.py): 1,633 trades/s without it,
-- 4,663/s with it; the same window rows.
SET 'table.optimizer.reuse-optimize-block-with-digest-enabled' = 'true';

-- Idle partitions: no source idle timeout ('scan.watermark.idle-timeout' / 'table.exec.source.idle-timeout').
-- Measured on Flink 2.2.1 + kafka connector 5.0 (README "Idle partitions"): with it, a partition that falls
-- silent stops holding event time back, but once every partition has been idle the windows that were open
-- then are never written, not even after trading resumes and the watermark passes them (no late trade
-- either: they are lost). Instead the generator sends a heartbeat to every partition each second
-- (marketpulse/trade.py, heartbeat_value): it moves its partition's watermark like a trade and is neither
-- a trade nor a dead letter here (${record_is_heartbeat}). A partition that receives nothing at all, not
-- even heartbeats (a producer without them), holds the watermark back until it does.

-- Checkpoints commit the Kafka offsets and flush the JDBC sinks.
SET 'execution.checkpointing.interval' = '${flink_checkpoint_interval_seconds} s';

-- Source: the trades topic (JSON, marketpulse/schemas/trade.schema.json), every record as raw bytes (a
-- tombstone too). `ts` is the event time computed from the record's epoch-millisecond `event_time` (a
-- heartbeat's `heartbeat`). The watermark, per partition, is the largest event time of a valid trade or
-- heartbeat seen minus the bounded delay minus 1 ms (Flink's BoundedOutOfOrderness watermark, as in the
-- DataStream job) minus the grace: a window fires when the DataStream job emits it. Only valid trades (the
-- condition of sql/include/trade_is_valid.sql) and heartbeats move it.
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
    ts AS TO_TIMESTAMP_LTZ(LEAST(${trade_max_event_time_ms}, COALESCE(TRY_CAST(REGEXP_EXTRACT(
              CAST(`value` AS STRING), '"(?:event_time|heartbeat)"\s*:\s*([0-9]{1,15})', 1) AS BIGINT), 0)), 3),
    WATERMARK FOR ts AS CASE WHEN ${trade_is_valid} OR ${record_is_heartbeat}
        THEN ts - INTERVAL '${max_out_of_orderness_seconds}' SECOND(3)
                - INTERVAL '${windows_grace_seconds}' SECOND(3) - INTERVAL '0.001' SECOND
        ELSE TO_TIMESTAMP_LTZ(0, 3) END
) WITH (
    'connector' = 'kafka',
    'topic' = '${kafka_trades_topic}',
    'properties.bootstrap.servers' = '${kafka_bootstrap_servers}',
    'properties.group.id' = '${sql_job_name}.${kafka_trades_topic}',
    'properties.auto.offset.reset' = 'earliest',
    -- One subtask reads every partition, and its watermark is the smallest of theirs: Flink holds it at
    -- the start until each partition has given a record (FLINK-26018). Kafka's consumer takes a backlog in
    -- chunks of this many bytes per partition in turn; at its default (1 MiB, more than a partition's
    -- hour of demo history) it read the partitions one after another, and no window closed until almost
    -- all of a backlog was read. 64 KiB chunks take turns every few hundred records. The lateness rule is
    -- unchanged: a trade is late against the smallest of the partitions' watermarks.
    'properties.max.partition.fetch.bytes' = '65536',
    'scan.startup.mode' = 'group-offsets',
    'value.format' = 'raw'
);

-- Every Kafka record of the topic, with is_valid: the rules of marketpulse/trade.py on the JSON text of
-- each field (f_*), the same condition as the source's WATERMARK clause, so that only valid trades move
-- event time.
CREATE TEMPORARY VIEW checked_trades AS
SELECT `partition`, `offset`, `value`, f_trade_id, f_symbol, f_price, f_size, f_side, f_event_time, f_all, ts,
       ${trade_is_valid} AS is_valid, ${record_is_heartbeat} AS is_heartbeat
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
