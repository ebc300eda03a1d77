-- MarketPulse PostgreSQL schema, version 13: anomalies per engine. The Flink SQL job computes the price
-- z-score rule too (sql/anomalies.sql, engine 'sql') over the same trades as the DataStream job's detector
-- (engine 'datastream'), and both write this table: the engine is part of the key, so the two engines'
-- findings on one trade are two rows, each engine's upsert rewrites only its own, and comparing them is a
-- query. The default: every row written before this version, and every writer that names no engine (the
-- tests' and seed scripts' fixtures), is the DataStream job's; both Flink sinks write the column.
ALTER TABLE anomalies
    ADD COLUMN engine TEXT NOT NULL DEFAULT 'datastream',
    DROP CONSTRAINT anomalies_pkey,
    ADD PRIMARY KEY (engine, trade_id, rule);
