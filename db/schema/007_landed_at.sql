-- MarketPulse PostgreSQL schema, version 7: when a row first landed in the database.
-- The engines stamp what they know (anomalies.detected_at: when the operator found it); only the database
-- knows when the sink's batch arrived. landed_at is set on INSERT by the server's clock and left alone by
-- the sinks' upserts (their INSERT ... ON CONFLICT DO UPDATE lists its columns), so a replay that rewrites a
-- row keeps the first landing. bench/latency.py measures event -> row and window end -> row with it.
ALTER TABLE anomalies ADD COLUMN landed_at timestamptz NOT NULL DEFAULT clock_timestamp();
ALTER TABLE window_metrics ADD COLUMN landed_at timestamptz NOT NULL DEFAULT clock_timestamp();
