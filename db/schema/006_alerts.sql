-- MarketPulse PostgreSQL schema, version 6: the alert service's state (python -m alerts, alerts/).
-- One row per anomaly the service has decided, keyed by the anomalies topic's dedup key (trade_id, rule): a
-- replayed or repeated message finds its row and is never delivered again. The service writes the row after
-- delivering, and commits its Kafka offsets only after the rows of a batch are stored.

-- decision: 'delivered' (every configured channel accepted it), 'suppressed' (within the cooldown of an
-- earlier alert of the same symbol and rule, in event time; not sent), 'dead' (an alert that at least one
-- channel did not accept after its retries; see alert_dead_letters). reason says why for the last two.
-- channels: what each channel did, e.g. {"webhook": {"ok": true, "attempts": 1, "status": 200}}.
CREATE TABLE alert_decisions (
    trade_id         TEXT NOT NULL,
    rule             TEXT NOT NULL,
    symbol           TEXT NOT NULL,
    event_time       TIMESTAMPTZ NOT NULL,
    price            DOUBLE PRECISION,
    size             BIGINT,
    z_score          DOUBLE PRECISION,        -- the statistic that fired (z, or % move for price_jump)
    decision         TEXT NOT NULL CHECK (decision IN ('delivered', 'suppressed', 'dead')),
    reason           TEXT,
    channels         JSONB NOT NULL DEFAULT '{}',
    kafka_partition  INTEGER,
    kafka_offset     BIGINT,
    decided_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (trade_id, rule)
);
-- The cooldown's starting point on restart: the latest alert per (symbol, rule).
CREATE INDEX alert_decisions_alerts_by_group ON alert_decisions (symbol, rule, event_time DESC)
    WHERE decision <> 'suppressed';
-- The dashboard's alert strip: the newest delivered alerts.
CREATE INDEX alert_decisions_delivered_by_time ON alert_decisions (event_time DESC)
    WHERE decision = 'delivered';

-- Alerts a channel did not accept: one row per (trade_id, rule, channel), with the payload that was sent (to
-- deliver it again by hand), the reason of the last failure and the number of attempts.
CREATE TABLE alert_dead_letters (
    trade_id    TEXT NOT NULL,
    rule        TEXT NOT NULL,
    channel     TEXT NOT NULL,
    payload     JSONB NOT NULL,
    reason      TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    failed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (trade_id, rule, channel),
    FOREIGN KEY (trade_id, rule) REFERENCES alert_decisions (trade_id, rule) ON DELETE CASCADE
);
CREATE INDEX alert_dead_letters_by_time ON alert_dead_letters (failed_at DESC);
