-- A small unbounded job with keyed state for tests/integration/test_supervisor.py: datagen rows counted per
-- key into PostgreSQL (upsert), checkpointed every 2 s. After the JobManager is killed, the supervisor must
-- resubmit it from its newest checkpoint: the counts then continue from the checkpointed state, not from 0.
-- The table (supervised_counter) is created by the test in the stack's database.

SET 'pipeline.name' = 'marketpulse-supervised-counter';
SET 'execution.checkpointing.interval' = '2 s';
SET 'parallelism.default' = '1';

CREATE TABLE counter_source (
    k INT,
    v BIGINT
) WITH (
    'connector' = 'datagen',
    'rows-per-second' = '200',
    'fields.k.min' = '1',
    'fields.k.max' = '4'
);

CREATE TABLE counter_sink (
    k INT,
    n BIGINT,
    PRIMARY KEY (k) NOT ENFORCED
) WITH (
    'connector' = 'jdbc',
    'url' = '${postgres_jdbc_url}',
    'table-name' = 'supervised_counter',
    ${postgres_credentials}
);

INSERT INTO counter_sink SELECT k, COUNT(*) AS n FROM counter_source GROUP BY k;
