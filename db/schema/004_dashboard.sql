-- MarketPulse PostgreSQL schema, version 4: what the dashboard's read path needs at scale (measured by
-- bench/dashboard_queries.py with 1M window rows and 100k anomalies; target p95 < 100 ms per refresh).

-- (One symbol over a range and its first/last window use window_metrics' primary key; the latest window of
-- a series uses window_metrics_by_time. Anomaly filters use 001's two anomalies indexes.)

-- Hourly roll-up of window_metrics per (engine, window size, symbol), kept exact by a trigger: the market
-- overview of a long range (1 day, all) sums whole hours here and reads raw windows only for the partial
-- hours at both ends, instead of scanning every window in the range. Hours are UTC (date_trunc(..., 'UTC')).
-- An upsert that rewrites a window (a Flink replay) subtracts the old row and adds the new one.
CREATE TABLE window_metrics_hourly (
    engine          TEXT NOT NULL,
    window_seconds  INTEGER NOT NULL,
    hour            TIMESTAMPTZ NOT NULL,
    symbol          TEXT NOT NULL,
    windows         BIGINT NOT NULL,             -- window rows in the hour
    volume          BIGINT NOT NULL,
    notional        DOUBLE PRECISION NOT NULL,
    trade_count     BIGINT NOT NULL,
    close_sum       DOUBLE PRECISION NOT NULL,   -- sum of the windows' closes (mean close = close_sum / windows)
    PRIMARY KEY (engine, window_seconds, hour, symbol)
);

CREATE FUNCTION window_metrics_hourly_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO window_metrics_hourly AS h
        VALUES (OLD.engine, OLD.window_seconds, date_trunc('hour', OLD.window_start, 'UTC'), OLD.symbol,
                -1, -OLD.volume, -OLD.notional, -OLD.trade_count, -OLD.close)
        ON CONFLICT (engine, window_seconds, hour, symbol) DO UPDATE SET
            windows = h.windows + EXCLUDED.windows, volume = h.volume + EXCLUDED.volume,
            notional = h.notional + EXCLUDED.notional, trade_count = h.trade_count + EXCLUDED.trade_count,
            close_sum = h.close_sum + EXCLUDED.close_sum;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO window_metrics_hourly AS h
        VALUES (NEW.engine, NEW.window_seconds, date_trunc('hour', NEW.window_start, 'UTC'), NEW.symbol,
                1, NEW.volume, NEW.notional, NEW.trade_count, NEW.close)
        ON CONFLICT (engine, window_seconds, hour, symbol) DO UPDATE SET
            windows = h.windows + EXCLUDED.windows, volume = h.volume + EXCLUDED.volume,
            notional = h.notional + EXCLUDED.notional, trade_count = h.trade_count + EXCLUDED.trade_count,
            close_sum = h.close_sum + EXCLUDED.close_sum;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION window_metrics_hourly_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE window_metrics_hourly;
    RETURN NULL;
END;
$$;

CREATE TRIGGER window_metrics_hourly_rows AFTER INSERT OR UPDATE OR DELETE ON window_metrics
    FOR EACH ROW EXECUTE FUNCTION window_metrics_hourly_apply();
CREATE TRIGGER window_metrics_hourly_truncate AFTER TRUNCATE ON window_metrics
    FOR EACH STATEMENT EXECUTE FUNCTION window_metrics_hourly_truncate();

-- Rows written before this file was applied.
INSERT INTO window_metrics_hourly
SELECT engine, window_seconds, date_trunc('hour', window_start, 'UTC'), symbol, count(*), sum(volume),
       sum(notional), sum(trade_count), sum(close)
FROM window_metrics GROUP BY 1, 2, 3, 4;
