-- MarketPulse PostgreSQL schema, version 3: the tables only the Flink SQL scripts write (sql/indicators.sql,
-- sql/top_movers.sql). Window metrics and late trades of the SQL scripts go to window_metrics and
-- late_trades (001_core.sql) with engine = 'sql'. Every primary key is the upsert key of the script's JDBC
-- sink, so a replay rewrites the same rows.

-- Sliding (HOP) windows per symbol: window_seconds long, one every slide_seconds (sql/indicators.sql).
CREATE TABLE moving_averages (
    symbol          TEXT NOT NULL,
    window_seconds  INTEGER NOT NULL,
    slide_seconds   INTEGER NOT NULL,
    window_start    TIMESTAMPTZ NOT NULL,
    window_end      TIMESTAMPTZ NOT NULL,
    avg_price       DOUBLE PRECISION NOT NULL,   -- AVG(price), unweighted
    vwap            DOUBLE PRECISION NOT NULL,   -- SUM(price * size) / SUM(size)
    volume          BIGINT NOT NULL,
    trade_count     BIGINT NOT NULL,
    PRIMARY KEY (symbol, window_seconds, slide_seconds, window_end)
);
-- The dashboard: all symbols' latest windows (one symbol over time is the primary key's prefix).
CREATE INDEX moving_averages_by_time ON moving_averages (window_seconds, slide_seconds, window_end DESC);

-- Technical indicators per symbol and bar of bar_seconds (sql/indicators.sql, formulas in
-- docs/indicators.md). NULL while an indicator warms up.
CREATE TABLE indicators (
    symbol           TEXT NOT NULL,
    bar_seconds      INTEGER NOT NULL,
    bar_start        TIMESTAMPTZ NOT NULL,
    bar_end          TIMESTAMPTZ NOT NULL,
    close            DOUBLE PRECISION NOT NULL,
    sma              DOUBLE PRECISION,         -- mean of the last 20 closes
    ewma             DOUBLE PRECISION,         -- exponentially weighted mean of the last 32 closes, span 10
    bollinger_upper  DOUBLE PRECISION,         -- sma + 2 population stddev of the last 20 closes
    bollinger_lower  DOUBLE PRECISION,         -- sma - 2 population stddev
    volatility       DOUBLE PRECISION,         -- sample stddev of the last 20 log returns, per bar
    rsi              DOUBLE PRECISION,         -- Cutler's RSI over the last 14 changes, 0..100
    PRIMARY KEY (symbol, bar_seconds, bar_start)
);
-- One symbol over a time range is the primary key's prefix; this one serves "latest bar of every symbol".
CREATE INDEX indicators_by_time ON indicators (bar_seconds, bar_end DESC);

-- Top movers per tumbling window (sql/top_movers.sql): for each ranking ('gainers': largest % change first,
-- 'losers': smallest first, 'volume': largest volume first) the first N symbols, rank 1..N.
CREATE TABLE top_movers (
    ranking         TEXT NOT NULL,
    window_seconds  INTEGER NOT NULL,
    window_start    TIMESTAMPTZ NOT NULL,
    window_end      TIMESTAMPTZ NOT NULL,
    rank            INTEGER NOT NULL,
    symbol          TEXT NOT NULL,
    pct_change      DOUBLE PRECISION NOT NULL,   -- 100 * (close / open - 1)
    open            DOUBLE PRECISION NOT NULL,
    close           DOUBLE PRECISION NOT NULL,
    volume          BIGINT NOT NULL,
    trade_count     BIGINT NOT NULL,
    PRIMARY KEY (ranking, window_seconds, window_start, rank)
);
-- The dashboard: the latest windows of a ranking are the primary key's prefix; a symbol's appearances:
CREATE INDEX top_movers_by_symbol_time ON top_movers (symbol, window_start DESC);
