-- A tiny unbounded job for the dashboard's browser test: datagen -> blackhole, a few rows per second, so the
-- health panel has a RUNNING job with live metrics. The test cancels it through the REST API afterwards.
-- Run with `python -m stack sql`; ${job_name} is filled in by the test (unique per run).

SET 'pipeline.name' = '${job_name}';

-- Source: generated rows, no Kafka needed.
CREATE TEMPORARY TABLE heartbeat (
    id    BIGINT,
    price DOUBLE
) WITH (
    'connector' = 'datagen',
    'rows-per-second' = '5'
);

-- Sink: discards everything.
CREATE TEMPORARY TABLE nowhere (
    id    BIGINT,
    price DOUBLE
) WITH (
    'connector' = 'blackhole'
);

INSERT INTO nowhere SELECT id, price FROM heartbeat;
