-- MarketPulse's price z-score rule in Flink SQL: the DataStream job's `price_zscore`
-- (marketpulse/analytics/detector.py) per symbol over OVER windows, written to `anomalies` as engine 'sql'
-- beside the DataStream job's rows (engine 'datastream'), so the two engines can be compared on one stream.
--
--   make sql SCRIPT=sql/anomalies.sql      (this script alone, as job marketpulse-sql-anomalies)
--   make sql SCRIPT=sql/pipeline.sql       (with the other scripts, as one job: make demo's)
--
-- The rule, with the [detector] settings of conf/pipeline.toml (the detector's own, one definition):
--   r = ln(p / p_prev) over the gap dt = t - t_prev from the symbol's previous on-time trade, in event-time
--   order; spread = max(sqrt(sum(r_i^2) / sum(dt_i) * dt), min_stddev_ticks * tick_size / p_prev), the
--   realized variance per second of the baseline (per trade if its gaps sum to 0), never below that many
--   price ticks; z = r / spread. The baseline is the returns of the last `lookback` trades before this one
--   (ROWS BETWEEN lookback PRECEDING AND CURRENT ROW, less the current row), without those that moved the
--   price by price_jump_pct or more. A trade fires when the baseline holds `warmup` returns or more, |z| >
--   z_threshold, and it is as far from the trade before the previous one (the same z with p_prev2, t_prev2):
--   a one-trade spike fires once, on the spike and not on the way back, and a lasting jump once, on its
--   first trade. The row's z_score is z, stddev the spread, mean empty: the DataStream job's columns.
--
-- What the DataStream detector does that SQL cannot (no recursion: a row's baseline cannot depend on
-- whether earlier rows fired): it keeps every return that broke a price rule out of its baseline and
-- measures against the last trade that broke none, however far back; here the baseline leaves out only
-- price jumps (they need no baseline to be known) and the reference is at most two trades back. It scores
-- in arrival order, late trades included, at once; here the trades are ordered by event time (ties in
-- arrival order) once the watermark has passed them, late trades (sql/include/trades.sql) are not scored,
-- and a finding is written after the out-of-orderness bound. The DataStream job's warm-up counts every
-- return from the symbol's first trade, this one the baseline's returns in its frame. On injected spikes
-- the two agree (tests/integration/test_sql_zscore.py prints how far).
--
-- Numbers: the frame's sums are DOUBLE running sums (Flink's bounded OVER adds the new row and retracts the
-- one leaving): each step rounds by ~1e-16 of the sum at that moment, and price jumps never enter it, so
-- the rounding left behind stays far below one tick's squared return (~1e-9 at $300); gaps are summed in
-- integer ms, exactly.

-- include: include/trades.sql

-- Sink: the anomalies table, engine 'sql', flushed every second.
-- include: include/anomalies_postgres.sql table=anomalies options=${postgres_sink_options}

-- Each on-time trade with the trade before it of its symbol in event-time order: the first of a frame of the
-- trade and the one before. A ROWS frame takes trades of the same event time one by one, in arrival order;
-- LAG would not do: Flink frames it by RANGE, so every trade of one millisecond would see the last of them
-- as its predecessor (measured: a spike and the next trade at the same ms both looked ordinary).
CREATE TEMPORARY VIEW trade_pairs AS
SELECT trade_id, symbol, price, size, event_time, ts,
       CASE WHEN COUNT(*) OVER w = 2 THEN FIRST_VALUE(price) OVER w END AS prev_price,
       CASE WHEN COUNT(*) OVER w = 2 THEN FIRST_VALUE(event_time) OVER w END AS prev_time
FROM on_time_trades
WINDOW w AS (PARTITION BY symbol ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW);

-- ... and the one before that: the previous trade's predecessor. b_square and b_gap_ms: the return as the
-- baseline takes it, NULL for the first trade and for a price jump.
CREATE TEMPORARY VIEW trade_returns AS
SELECT trade_id, symbol, price, size, ts, prev_price, prev2_price,
       LN(price / prev_price) AS log_return, event_time - prev_time AS gap_ms,
       LN(price / prev2_price) AS log_return2, event_time - prev2_time AS gap2_ms,
       CASE WHEN ABS(price / prev_price - 1) * 100 < ${detector_price_jump_pct}
            THEN LN(price / prev_price) * LN(price / prev_price) END AS b_square,
       CASE WHEN ABS(price / prev_price - 1) * 100 < ${detector_price_jump_pct}
            THEN event_time - prev_time END AS b_gap_ms
FROM (
    SELECT trade_id, symbol, price, size, event_time, ts, prev_price, prev_time,
           CASE WHEN COUNT(prev_price) OVER w = 2 THEN FIRST_VALUE(prev_price) OVER w END AS prev2_price,
           CASE WHEN COUNT(prev_price) OVER w = 2 THEN FIRST_VALUE(prev_time) OVER w END AS prev2_time
    FROM trade_pairs
    WINDOW w AS (PARTITION BY symbol ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
);

-- The baseline of each trade: the frame holds its own return and the last ${detector_lookback} before it
-- (a streaming OVER frame must end at CURRENT ROW), so its own is taken off again.
CREATE TEMPORARY VIEW return_baselines AS
SELECT trade_id, symbol, price, size, ts, prev_price, prev2_price, log_return, gap_ms, log_return2, gap2_ms,
       n_frame - CASE WHEN b_square IS NULL THEN 0 ELSE 1 END AS n_returns,
       GREATEST(squares_frame - COALESCE(b_square, 0.0), 0.0) AS squares,
       gaps_frame - COALESCE(b_gap_ms, 0) AS gaps_ms
FROM (
    SELECT *,
           COUNT(b_square) OVER w AS n_frame,
           SUM(b_square) OVER w AS squares_frame,
           SUM(b_gap_ms) OVER w AS gaps_frame
    FROM trade_returns
    WINDOW w AS (PARTITION BY symbol ORDER BY ts
                 ROWS BETWEEN ${detector_lookback} PRECEDING AND CURRENT ROW)
);

-- The spread expected over each trade's gap from the previous trade (spread) and from the one before
-- (spread2), never below min_stddev_ticks ticks of that trade's price.
CREATE TEMPORARY VIEW return_spreads AS
SELECT trade_id, symbol, price, size, ts, log_return, log_return2, prev2_price, n_returns,
       GREATEST(CASE WHEN gaps_ms > 0 THEN SQRT(squares / gaps_ms * gap_ms)
                     ELSE SQRT(squares / n_returns) END,
                ${detector_min_stddev_ticks} * ${detector_tick_size} / prev_price) AS spread,
       GREATEST(CASE WHEN gaps_ms > 0 THEN SQRT(squares / gaps_ms * gap2_ms)
                     ELSE SQRT(squares / n_returns) END,
                ${detector_min_stddev_ticks} * ${detector_tick_size} / prev2_price) AS spread2
FROM return_baselines
WHERE n_returns >= ${detector_warmup};

-- The trades the rule flags (see the header).
CREATE TEMPORARY VIEW price_zscores AS
SELECT trade_id, symbol, price, size, ts, log_return / spread AS z_score, spread
FROM return_spreads
WHERE spread > 0 AND ABS(log_return / spread) > ${detector_z_threshold}
  AND (prev2_price IS NULL OR ABS(log_return2 / spread2) > ${detector_z_threshold});

-- Every sink of the script in one statement set.
EXECUTE STATEMENT SET
BEGIN
    -- The z-score rule's findings, as the SQL engine's.
    INSERT INTO anomalies
    SELECT trade_id, CAST('price_zscore' AS STRING), symbol, CAST(ts AS TIMESTAMP(3)), price, size, z_score,
           CAST(NULL AS DOUBLE), spread, CAST(CURRENT_TIMESTAMP AS TIMESTAMP(3)), CAST('sql' AS STRING)
    FROM price_zscores;
END;
