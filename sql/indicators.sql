-- MarketPulse indicators in Flink SQL: sliding-window averages (HOP) and per-symbol technical indicators
-- over ${windows_short_size_seconds}-second bars (OVER windows). Formulas: docs/indicators.md.
--
--   make sql SCRIPT=sql/indicators.sql     (this script alone, as job marketpulse-sql-indicators)
--   make sql SCRIPT=sql/pipeline.sql       (with window metrics and top movers, as one job: make demo's)
--
-- Unbounded: sql-client.sh submits the job detached; cancel it from the web UI or with
-- `python -m stack flink cancel <job id>`. The $-placeholders come from conf/pipeline.toml and the
-- MARKETPULSE_<SECTION>_<KEY> environment overrides (stack/sql.py).
--
-- moving_averages: per symbol, HOP windows of ${windows_size_seconds} s sliding by ${windows_short_size_seconds} s:
--   avg_price = AVG(price) (unweighted), vwap = SUM(price * size) / SUM(size), volume, trade_count.
--
-- indicators: per symbol, one row per ${windows_short_size_seconds}-second bar that has trades. A bar's close is the
-- price of its trade with the largest (event_time, trade_id) (short_closes of
-- sql/include/tumbling_windows.sql, the closes of window_metrics.sql).
-- Over the symbol's bars in event-time order (bars without trades do not exist, they are not filled):
--   sma             mean of the last 20 closes (NULL until 20 bars)
--   bollinger_*     sma +/- 2 * population stddev of the same 20 closes (exact DECIMAL sums, as in
--                   window_metrics.sql; NULL until 20 bars)
--   ewma            exponentially weighted mean of the last 32 closes, weight (1 - a)^i for the close i bars
--                   back, a = 2 / (10 + 1), divided by the sum of the weights present (pandas
--                   ewm(span=10, adjust=True) over those 32 closes). SQL has no recursion, so the weights
--                   are built by doubling: each step adds the previous step's sum LAG 1, 2, 4, 8, 16 bars back
--                   times (1 - a)^(1, 2, 4, 8, 16). The closes older than 32 bars carry (1 - a)^32 = 0.2 % of
--                   the weight of the recursive EMA; they are left out, not approximated.
--   volatility      sample standard deviation of the last 20 log returns ln(close / previous close), per bar,
--                   not annualised (NULL until 20 returns)
--   rsi             Cutler's RSI over the last 14 close-to-close changes: 100 * sum(gains) / (sum(gains) +
--                   sum(losses)), simple sums instead of Wilder's recursive smoothing (NULL until 14
--                   changes, and when the price did not move at all)
--
-- Late trades: the rule of sql/include/trades.sql (window_metrics.sql writes them to late_trades): a trade
-- at or behind the watermark it meets is in no window here either. An on-time trade is ahead of the
-- watermark, so none of its tumbling or HOP windows has fired: each sees all of it or, if it is late, none.

-- include: include/trades.sql
-- include: include/tumbling_windows.sql window=short seconds=${windows_short_size_seconds}

-- Sink: moving_averages (db/schema/003_sql_analytics.sql), upserted by its primary key.
CREATE TABLE moving_averages (
    symbol         STRING,
    window_seconds INT,
    slide_seconds  INT,
    window_start   TIMESTAMP(3),
    window_end     TIMESTAMP(3),
    avg_price      DOUBLE,
    vwap           DOUBLE,
    volume         BIGINT,
    trade_count    BIGINT,
    PRIMARY KEY (symbol, window_seconds, slide_seconds, window_end) NOT ENFORCED
) WITH (
    'connector' = 'marketpulse-jdbc',
    'table-name' = 'moving_averages',
    ${postgres_sink_options}
);

-- Sink: indicators (db/schema/003_sql_analytics.sql), upserted by its primary key.
CREATE TABLE indicators (
    symbol          STRING,
    bar_seconds     INT,
    bar_start       TIMESTAMP(3),
    bar_end         TIMESTAMP(3),
    `close`         DOUBLE,
    sma             DOUBLE,
    ewma            DOUBLE,
    bollinger_upper DOUBLE,
    bollinger_lower DOUBLE,
    volatility      DOUBLE,
    rsi             DOUBLE,
    PRIMARY KEY (symbol, bar_seconds, bar_start) NOT ENFORCED
) WITH (
    'connector' = 'marketpulse-jdbc',
    'table-name' = 'indicators',
    ${postgres_sink_options}
);

-- Bars: the close of every symbol's ${windows_short_size_seconds}-second window. bar_time (window_end - 1 ms)
-- is an event-time attribute for the OVER windows below.
CREATE TEMPORARY VIEW bars AS
SELECT symbol, window_start AS bar_start, window_end AS bar_end, window_time AS bar_time, close_price
FROM short_closes;

-- Each bar with the previous bar's close of the same symbol, its log return and its gain or loss; n1/d1
-- start the doubling of the ewma (one term: the close, weight 1).
CREATE TEMPORARY VIEW bar_changes AS
SELECT symbol, bar_start, bar_end, bar_time, close_price,
       LN(close_price / prev_close) AS log_return,
       GREATEST(close_price - prev_close, 0.0) AS gain,
       GREATEST(prev_close - close_price, 0.0) AS loss,
       close_price AS n1, CAST(1.0 AS DOUBLE) AS d1
FROM (
    SELECT symbol, bar_start, bar_end, bar_time, close_price,
           LAG(close_price, 1) OVER (PARTITION BY symbol ORDER BY bar_time) AS prev_close
    FROM bars
);

-- ewma doubling, 2 terms: n2 = n1 + q * n1 one bar back (q = 1 - 2 / 11); d2 the same for the weights.
CREATE TEMPORARY VIEW ewma_2 AS
SELECT symbol, bar_start, bar_end, bar_time, close_price, log_return, gain, loss,
       n1 + POWER(9.0 / 11, 1) * COALESCE(LAG(n1, 1) OVER w, 0.0) AS n2,
       d1 + POWER(9.0 / 11, 1) * COALESCE(LAG(d1, 1) OVER w, 0.0) AS d2
FROM bar_changes
WINDOW w AS (PARTITION BY symbol ORDER BY bar_time);

-- ewma doubling, 4 terms.
CREATE TEMPORARY VIEW ewma_4 AS
SELECT symbol, bar_start, bar_end, bar_time, close_price, log_return, gain, loss,
       n2 + POWER(9.0 / 11, 2) * COALESCE(LAG(n2, 2) OVER w, 0.0) AS n4,
       d2 + POWER(9.0 / 11, 2) * COALESCE(LAG(d2, 2) OVER w, 0.0) AS d4
FROM ewma_2
WINDOW w AS (PARTITION BY symbol ORDER BY bar_time);

-- ewma doubling, 8 terms.
CREATE TEMPORARY VIEW ewma_8 AS
SELECT symbol, bar_start, bar_end, bar_time, close_price, log_return, gain, loss,
       n4 + POWER(9.0 / 11, 4) * COALESCE(LAG(n4, 4) OVER w, 0.0) AS n8,
       d4 + POWER(9.0 / 11, 4) * COALESCE(LAG(d4, 4) OVER w, 0.0) AS d8
FROM ewma_4
WINDOW w AS (PARTITION BY symbol ORDER BY bar_time);

-- ewma doubling, 16 terms.
CREATE TEMPORARY VIEW ewma_16 AS
SELECT symbol, bar_start, bar_end, bar_time, close_price, log_return, gain, loss,
       n8 + POWER(9.0 / 11, 8) * COALESCE(LAG(n8, 8) OVER w, 0.0) AS n16,
       d8 + POWER(9.0 / 11, 8) * COALESCE(LAG(d8, 8) OVER w, 0.0) AS d16
FROM ewma_8
WINDOW w AS (PARTITION BY symbol ORDER BY bar_time);

-- ewma doubling, 32 terms: the ewma is n32 / d32.
CREATE TEMPORARY VIEW ewma_32 AS
SELECT symbol, bar_start, bar_end, bar_time, close_price, log_return, gain, loss,
       n16 + POWER(9.0 / 11, 16) * COALESCE(LAG(n16, 16) OVER w, 0.0) AS n32,
       d16 + POWER(9.0 / 11, 16) * COALESCE(LAG(d16, 16) OVER w, 0.0) AS d32
FROM ewma_16
WINDOW w AS (PARTITION BY symbol ORDER BY bar_time);

-- Rolling sums over the last 20 bars: closes (sma, Bollinger) and log returns (volatility).
CREATE TEMPORARY VIEW bar_windows_20 AS
SELECT symbol, bar_start, bar_end, bar_time, close_price, gain, loss, n32 / d32 AS ewma,
       COUNT(close_price) OVER w AS closes_20,
       AVG(close_price) OVER w AS sma_20,
       SUM(CAST(close_price AS DECIMAL(18, 8))) OVER w AS sum_dec_20,
       SUM(CAST(close_price AS DECIMAL(18, 8)) * CAST(close_price AS DECIMAL(18, 8))) OVER w AS sum_sq_dec_20,
       COUNT(log_return) OVER w AS returns_20,
       SUM(log_return) OVER w AS sum_return_20,
       SUM(log_return * log_return) OVER w AS sum_sq_return_20
FROM ewma_32
WINDOW w AS (PARTITION BY symbol ORDER BY bar_time ROWS BETWEEN 19 PRECEDING AND CURRENT ROW);

-- Rolling sums over the last 14 bars: gains and losses (rsi). A query takes one OVER frame, hence a view.
CREATE TEMPORARY VIEW bar_windows AS
SELECT symbol, bar_start, bar_end, close_price, ewma, closes_20, sma_20, sum_dec_20, sum_sq_dec_20,
       returns_20, sum_return_20, sum_sq_return_20,
       COUNT(gain) OVER w AS changes_14,
       SUM(gain) OVER w AS gains_14,
       SUM(loss) OVER w AS losses_14
FROM bar_windows_20
WINDOW w AS (PARTITION BY symbol ORDER BY bar_time ROWS BETWEEN 13 PRECEDING AND CURRENT ROW);

-- The indicators of each bar (see the header for the formulas and their warm-up).
CREATE TEMPORARY VIEW bar_indicators AS
SELECT symbol, bar_start, bar_end, close_price, ewma,
       CASE WHEN closes_20 = 20 THEN sma_20 END AS sma,
       CASE WHEN closes_20 = 20 THEN SQRT(CAST(
           (sum_sq_dec_20 - CAST(sum_dec_20 AS DECIMAL(18, 8)) * CAST(sum_dec_20 AS DECIMAL(18, 8)) / 20) / 20
           AS DOUBLE)) END AS stddev_20,
       CASE WHEN returns_20 = 20 THEN SQRT(GREATEST(
           (sum_sq_return_20 - sum_return_20 * sum_return_20 / 20) / 19, 0.0)) END AS volatility,
       CASE WHEN changes_14 = 14 AND gains_14 + losses_14 > 0
            THEN 100 * gains_14 / (gains_14 + losses_14) END AS rsi
FROM bar_windows;

-- Sliding (HOP) windows per symbol.
CREATE TEMPORARY VIEW sliding_windows AS
SELECT symbol, window_start, window_end,
       AVG(price) AS avg_price,
       SUM(price * size) / SUM(size) AS vwap,
       SUM(size) AS volume,
       COUNT(*) AS trade_count
FROM TABLE(HOP(TABLE on_time_trades, DESCRIPTOR(ts), INTERVAL '${windows_short_size_seconds}' SECOND(3),
               INTERVAL '${windows_size_seconds}' SECOND(3)))
GROUP BY window_start, window_end, symbol;

-- Both sinks in one job that reads the topic once.
EXECUTE STATEMENT SET
BEGIN
    -- Sliding-window averages.
    INSERT INTO moving_averages
    SELECT symbol, ${windows_size_seconds}, ${windows_short_size_seconds}, window_start, window_end, avg_price, vwap,
           volume, trade_count
    FROM sliding_windows;

    -- Indicators per bar.
    INSERT INTO indicators
    SELECT symbol, ${windows_short_size_seconds}, bar_start, bar_end, close_price, sma, ewma,
           sma + 2 * stddev_20, sma - 2 * stddev_20, volatility, rsi
    FROM bar_indicators;
END;
