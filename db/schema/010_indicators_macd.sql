-- MarketPulse PostgreSQL schema, version 10: the MACD and the long SMA on the Flink SQL job's indicators
-- (sql/indicators.sql, formulas in docs/indicators.md; periods in conf/pipeline.toml [indicators], the
-- defaults in the comments). NULL-able like the others: rows written before this version have none, and
-- sma_long is NULL while it warms up.
ALTER TABLE indicators
    ADD COLUMN ema_fast DOUBLE PRECISION,         -- EMA of the closes, span 12, over the last 128 bars
    ADD COLUMN ema_slow DOUBLE PRECISION,         -- the same, span 26
    ADD COLUMN macd DOUBLE PRECISION,             -- ema_fast - ema_slow
    ADD COLUMN macd_signal DOUBLE PRECISION,      -- EMA of macd, span 9, over the last 128 bars
    ADD COLUMN macd_histogram DOUBLE PRECISION,   -- macd - macd_signal
    ADD COLUMN sma_long DOUBLE PRECISION;         -- mean of the last 50 closes
