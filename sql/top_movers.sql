-- MarketPulse top movers in Flink SQL: per ${windows_size_seconds}-second tumbling window, the symbols that moved
-- most and traded most, with window Top-N.
--
--   make sql SCRIPT=sql/top_movers.sql     (this script alone, as job marketpulse-sql-top-movers)
--   make sql SCRIPT=sql/pipeline.sql       (with window metrics and indicators, as one job: make demo's)
--
-- Unbounded: sql-client.sh submits the job detached; cancel it from the web UI or with
-- `python -m stack flink cancel <job id>`. The $-placeholders come from conf/pipeline.toml and the
-- MARKETPULSE_<SECTION>_<KEY> environment overrides (stack/sql.py).
--
-- Per symbol and window, open/close/volume are long_windows of sql/include/tumbling_windows.sql, the
-- ${windows_size_seconds}-second windows of window_metrics.sql, and
--   pct_change = 100 * (close / open - 1).
-- Per window, top_movers holds three rankings of the first 5 symbols (ROW_NUMBER, ties broken by symbol so
-- the ranks never depend on arrival order):
--   'gainers'  pct_change descending
--   'losers'   pct_change ascending
--   'volume'   volume descending
-- Late trades: the rule of sql/include/trades.sql (window_metrics.sql writes them to late_trades): in no
-- window here.

-- include: include/trades.sql
-- include: include/tumbling_windows.sql window=long seconds=${windows_size_seconds}

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

-- One row per symbol and window: open, close, % change, volume.
CREATE TEMPORARY VIEW window_moves AS
SELECT window_start, window_end, symbol, open_price, close_price,
       100 * (close_price / open_price - 1) AS pct_change, volume, trade_count
FROM long_windows;

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
