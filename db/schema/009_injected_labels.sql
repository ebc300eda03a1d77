-- MarketPulse PostgreSQL schema, version 9: the generator's ground truth in the database.
-- One row per label on the injected topic ([kafka] injected_topic, generator/injections.py: anomaly kinds,
-- late and bad records), written by the Flink SQL job (sql/window_metrics.sql, upsert by (trade_id, kind):
-- a replay rewrites the same rows). The dashboard's Detection quality view scores the anomalies table
-- against it with marketpulse.analytics.scoring, the code `make score` uses.
CREATE TABLE injected_labels (
    trade_id    text NOT NULL,
    kind        text NOT NULL,
    symbol      text,
    event_time  timestamptz,
    PRIMARY KEY (trade_id, kind)
);
CREATE INDEX injected_labels_by_time ON injected_labels (event_time);
