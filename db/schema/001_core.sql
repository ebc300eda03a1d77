-- MarketPulse PostgreSQL schema, version 1: the tables the Flink jobs write and the dashboard reads.
-- Applied in file-name order by `python -m stack up` (and by docker-compose's postgres init); each file runs
-- once and is recorded in schema_migrations. Every table Flink writes has the primary key its JDBC upsert uses,
-- so a replay after a failure rewrites the same rows and changes nothing.

-- Reference data per symbol, published by the generator (company, sector and exchange come from faker).
CREATE TABLE symbols (
    symbol        TEXT PRIMARY KEY,
    company       TEXT NOT NULL,
    sector        TEXT NOT NULL,
    exchange      TEXT NOT NULL,
    start_price   DOUBLE PRECISION NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Tumbling event-time window aggregates per symbol. `engine` says which job wrote the row ('datastream' for
-- the PyFlink job, 'sql' for the Flink SQL script) so the two can be compared row for row.
-- stddev_price is the population standard deviation (STDDEV_POP) of the trade prices in the window.
CREATE TABLE window_metrics (
    engine          TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    window_seconds  INTEGER NOT NULL,
    window_start    TIMESTAMPTZ NOT NULL,
    window_end      TIMESTAMPTZ NOT NULL,
    open            DOUBLE PRECISION NOT NULL,
    high            DOUBLE PRECISION NOT NULL,
    low             DOUBLE PRECISION NOT NULL,
    close           DOUBLE PRECISION NOT NULL,
    vwap            DOUBLE PRECISION NOT NULL,
    volume          BIGINT NOT NULL,
    notional        DOUBLE PRECISION NOT NULL,
    trade_count     BIGINT NOT NULL,
    buy_count       BIGINT NOT NULL,
    sell_count      BIGINT NOT NULL,
    min_price       DOUBLE PRECISION NOT NULL,
    max_price       DOUBLE PRECISION NOT NULL,
    avg_price       DOUBLE PRECISION NOT NULL,
    stddev_price    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (engine, symbol, window_seconds, window_start)
);
-- The dashboard's queries: one symbol over a time range, and all symbols in the latest windows.
CREATE INDEX window_metrics_by_time ON window_metrics (engine, window_seconds, window_start DESC);

-- Trades the z-score detector flagged. One row per (trade, rule): a trade can break several rules.
CREATE TABLE anomalies (
    trade_id      TEXT NOT NULL,
    rule          TEXT NOT NULL,           -- 'price_zscore' | 'price_jump' | 'volume_zscore'
    symbol        TEXT NOT NULL,
    event_time    TIMESTAMPTZ NOT NULL,
    price         DOUBLE PRECISION NOT NULL,
    size          BIGINT NOT NULL,
    z_score       DOUBLE PRECISION,        -- the statistic that fired (z, or % move for price_jump)
    mean          DOUBLE PRECISION,
    stddev        DOUBLE PRECISION,
    detected_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (trade_id, rule)
);
CREATE INDEX anomalies_by_symbol_time ON anomalies (symbol, event_time DESC);
CREATE INDEX anomalies_by_time ON anomalies (event_time DESC);

-- Trades that arrived after their window had closed (behind the watermark plus the grace).
CREATE TABLE late_trades (
    engine        TEXT NOT NULL,
    trade_id      TEXT NOT NULL,
    symbol        TEXT NOT NULL,
    price         DOUBLE PRECISION NOT NULL,
    size          BIGINT NOT NULL,
    side          TEXT NOT NULL,
    event_time    TIMESTAMPTZ NOT NULL,
    watermark     TIMESTAMPTZ,             -- the watermark when the trade was seen, if known
    PRIMARY KEY (engine, trade_id)
);
CREATE INDEX late_trades_by_time ON late_trades (event_time DESC);

-- Records that are not valid trades, with the reason. Keyed by a hash of the raw payload because the
-- DataStream Kafka source exposes values only; a replay rewrites the same rows.
CREATE TABLE dead_letters (
    engine          TEXT NOT NULL,
    payload_sha1    TEXT NOT NULL,
    payload         TEXT NOT NULL,
    reason          TEXT NOT NULL,
    topic           TEXT NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (engine, payload_sha1)
);
CREATE INDEX dead_letters_by_time ON dead_letters (received_at DESC);
