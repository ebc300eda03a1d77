-- MarketPulse PostgreSQL schema, version 12: the multivariate window detector's scored windows.
-- One row per closed window of [windows] size_seconds that the detector scored (every window of a symbol
-- after its warm-up, anomalous or not, so a threshold can be judged afterwards), written by the DataStream
-- job (jobs/market_metrics_sinks.sql, upsert on the primary key: a replay rewrites the same rows).
-- score: the sum of the squared robust z per feature block, anomalous = score > threshold (the threshold in
-- force then); top_features: 'volume +6.21, imbalance +3.05, range -1.20', the features with the largest
-- |z| (marketpulse/analytics/multivariate.py).
CREATE TABLE window_anomalies (
    symbol          text NOT NULL,
    window_seconds  integer NOT NULL,
    window_start    timestamptz NOT NULL,
    window_end      timestamptz NOT NULL,
    score           double precision NOT NULL,
    threshold       double precision NOT NULL,
    anomalous       boolean NOT NULL,
    top_features    text NOT NULL,
    PRIMARY KEY (symbol, window_seconds, window_start)
);
-- The dashboard and make score read the anomalous ones by time.
CREATE INDEX window_anomalies_anomalous_by_time ON window_anomalies (window_start) WHERE anomalous;

-- The episode a label belongs to (the trade id of its first trade), for kinds injected over a stretch of
-- trades (volume_surge_flat, generator/injections.py); NULL for one-trade kinds. The detection quality view
-- counts such an episode once, as make score does from the topic.
ALTER TABLE injected_labels ADD COLUMN episode text;
