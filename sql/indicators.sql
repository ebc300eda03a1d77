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
-- Over the symbol's bars in event-time order (bars without trades do not exist, they are not filled), with
-- the periods of conf/pipeline.toml [indicators] (defaults in brackets):
--   sma             mean of the last sma_bars [20] closes (NULL until that many bars)
--   bollinger_*     sma +/- bollinger_k [2] * population stddev of the same closes (exact DECIMAL sums, as in
--                   window_metrics.sql; NULL until sma_bars bars)
--   ewma            EMA of the closes, span ewma_span [10]: the weights (1 - a)^i of the recursive EMA,
--                   a = 2 / (span + 1), over the last 128 closes, divided by the sum of the weights present
--                   (pandas ewm(span, adjust=True) over those 128 closes). SQL has no recursion: the sums
--                   are built by doubling (sql/include/ema.sql, which states the weight left out). Never NULL.
--   ema_fast, ema_slow   the same EMA with spans ema_fast_span [12] and ema_slow_span [26]
--   macd            ema_fast - ema_slow
--   macd_signal     the same EMA of the macd series, span macd_signal_span [9]
--   macd_histogram  macd - macd_signal
--   sma_long        mean of the last sma_long_bars [50] closes (NULL until that many bars)
--   volatility      sample standard deviation of the last volatility_returns [20] log returns
--                   ln(close / previous close), per bar, not annualised (NULL until that many returns)
--   rsi             Cutler's RSI over the last rsi_changes [14] close-to-close changes: 100 * sum(gains) /
--                   (sum(gains) + sum(losses)), simple sums instead of Wilder's recursive smoothing (NULL
--                   until that many changes, and when the price did not move at all)
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
    ema_fast        DOUBLE,
    ema_slow        DOUBLE,
    macd            DOUBLE,
    macd_signal     DOUBLE,
    macd_histogram  DOUBLE,
    sma_long        DOUBLE,
    PRIMARY KEY (symbol, bar_seconds, bar_start) NOT ENFORCED
) WITH (
    'connector' = 'marketpulse-jdbc',
    'table-name' = 'indicators',
    ${postgres_sink_options}
);

-- Sink: the indicators' alert rules (RSI overbought/oversold, Bollinger band breaks) on the anomalies topic,
-- which the alert service reads: the message of the DataStream job's anomalies (alerts/policy.py,
-- parse_anomaly), key = symbol. At-least-once: a restart may repeat a message; (trade_id, rule) identifies it.
-- include: include/anomalies_kafka.sql table=indicator_alerts_kafka

-- Bars: the close of every symbol's ${windows_short_size_seconds}-second window. bar_time (window_end - 1 ms)
-- is an event-time attribute for the OVER windows below; every view after this one keeps it.
CREATE TEMPORARY VIEW bars AS
SELECT symbol, window_start AS bar_start, window_end AS bar_end, window_time AS bar_time, close_price
FROM short_closes;

-- Each bar with the previous bar's close of the same symbol, its log return and its gain or loss.
CREATE TEMPORARY VIEW bar_changes AS
SELECT symbol, bar_start, bar_end, bar_time, close_price,
       LN(close_price / prev_close) AS log_return,
       GREATEST(close_price - prev_close, 0.0) AS gain,
       GREATEST(prev_close - close_price, 0.0) AS loss
FROM (
    SELECT symbol, bar_start, bar_end, bar_time, close_price,
           LAG(close_price, 1) OVER (PARTITION BY symbol ORDER BY bar_time) AS prev_close
    FROM bars
);

-- The EMAs of the closes, one construction (include/ema.sql) with each span: ewma, then the MACD's two.
-- include: include/ema.sql name=ewma span=${indicators_ewma_span} from=bar_changes value=close_price
-- include: include/ema.sql name=ema_fast span=${indicators_ema_fast_span} from=with_ewma value=close_price
-- include: include/ema.sql name=ema_slow span=${indicators_ema_slow_span} from=with_ema_fast value=close_price

-- The MACD line: fast EMA minus slow EMA of the closes.
CREATE TEMPORARY VIEW macd_lines AS
SELECT *, ema_fast - ema_slow AS macd
FROM with_ema_slow;

-- The MACD signal: the same EMA construction over the MACD line.
-- include: include/ema.sql name=macd_signal span=${indicators_macd_signal_span} from=macd_lines value=macd

-- Rolling sums over the last ${indicators_sma_bars} closes (sma, Bollinger). A query takes one OVER frame,
-- so each frame length below is a view of its own.
CREATE TEMPORARY VIEW sma_frames AS
SELECT *,
       COUNT(close_price) OVER w AS sma_closes,
       AVG(close_price) OVER w AS sma_mean,
       SUM(CAST(close_price AS DECIMAL(18, 8))) OVER w AS sum_dec,
       SUM(CAST(close_price AS DECIMAL(18, 8)) * CAST(close_price AS DECIMAL(18, 8))) OVER w AS sum_sq_dec
FROM with_macd_signal
WINDOW w AS (PARTITION BY symbol ORDER BY bar_time
             ROWS BETWEEN ${indicators_sma_bars_preceding} PRECEDING AND CURRENT ROW);

-- Rolling sums over the last ${indicators_volatility_returns} log returns (volatility).
CREATE TEMPORARY VIEW volatility_frames AS
SELECT *,
       COUNT(log_return) OVER w AS vol_returns,
       SUM(log_return) OVER w AS vol_sum,
       SUM(log_return * log_return) OVER w AS vol_sum_sq
FROM sma_frames
WINDOW w AS (PARTITION BY symbol ORDER BY bar_time
             ROWS BETWEEN ${indicators_volatility_returns_preceding} PRECEDING AND CURRENT ROW);

-- Rolling sums over the last ${indicators_rsi_changes} gains and losses (rsi).
CREATE TEMPORARY VIEW rsi_frames AS
SELECT *,
       COUNT(gain) OVER w AS rsi_changes,
       SUM(gain) OVER w AS rsi_gains,
       SUM(loss) OVER w AS rsi_losses
FROM volatility_frames
WINDOW w AS (PARTITION BY symbol ORDER BY bar_time
             ROWS BETWEEN ${indicators_rsi_changes_preceding} PRECEDING AND CURRENT ROW);

-- The mean of the last ${indicators_sma_long_bars} closes (sma_long).
CREATE TEMPORARY VIEW sma_long_frames AS
SELECT *,
       COUNT(close_price) OVER w AS sma_long_closes,
       AVG(close_price) OVER w AS sma_long_mean
FROM rsi_frames
WINDOW w AS (PARTITION BY symbol ORDER BY bar_time
             ROWS BETWEEN ${indicators_sma_long_bars_preceding} PRECEDING AND CURRENT ROW);

-- The indicators of each bar (see the header for the formulas and their warm-up); bar_time stays an
-- event-time attribute for the alert rules' OVER window.
CREATE TEMPORARY VIEW bar_values AS
SELECT symbol, bar_start, bar_end, bar_time, close_price, ewma, ema_fast, ema_slow, macd, macd_signal,
       macd - macd_signal AS macd_histogram,
       CASE WHEN sma_closes = ${indicators_sma_bars} THEN sma_mean END AS sma,
       CASE WHEN sma_closes = ${indicators_sma_bars} THEN SQRT(CAST(
           (sum_sq_dec - CAST(sum_dec AS DECIMAL(18, 8)) * CAST(sum_dec AS DECIMAL(18, 8))
                         / ${indicators_sma_bars}) / ${indicators_sma_bars}
           AS DOUBLE)) END AS sma_stddev,
       CASE WHEN vol_returns = ${indicators_volatility_returns} THEN SQRT(GREATEST(
           (vol_sum_sq - vol_sum * vol_sum / ${indicators_volatility_returns})
           / (${indicators_volatility_returns} - 1), 0.0)) END AS volatility,
       CASE WHEN rsi_changes = ${indicators_rsi_changes} AND rsi_gains + rsi_losses > 0
            THEN 100 * rsi_gains / (rsi_gains + rsi_losses) END AS rsi,
       CASE WHEN sma_long_closes = ${indicators_sma_long_bars} THEN sma_long_mean END AS sma_long
FROM sma_long_frames;

-- The Bollinger bands of each bar: sma +/- bollinger_k population standard deviations.
CREATE TEMPORARY VIEW bar_indicators AS
SELECT *,
       sma + ${indicators_bollinger_k} * sma_stddev AS bollinger_upper,
       sma - ${indicators_bollinger_k} * sma_stddev AS bollinger_lower
FROM bar_values;

-- Each bar with the previous bar's RSI, close and bands (NULL at the symbol's first bar), for the alert
-- rules: a rule fires on the bar that crosses its level, not on every bar beyond it. bar_end_ms: the bar's
-- end in epoch ms (UNIX_TIMESTAMP reads the text in the session time zone, UTC; bars are whole seconds).
CREATE TEMPORARY VIEW bar_crossings AS
SELECT *,
       UNIX_TIMESTAMP(DATE_FORMAT(bar_end, 'yyyy-MM-dd HH:mm:ss')) * 1000 AS bar_end_ms,
       LAG(rsi, 1) OVER w AS prev_rsi,
       LAG(close_price, 1) OVER w AS prev_close,
       LAG(bollinger_upper, 1) OVER w AS prev_upper,
       LAG(bollinger_lower, 1) OVER w AS prev_lower
FROM bar_indicators
WINDOW w AS (PARTITION BY symbol ORDER BY bar_time);

-- Alert rules (docs/indicators.md), one row per bar and rule that fires, as the anomalies topic carries
-- them: RSI above rsi_overbought or below rsi_oversold where the previous bar's was not (or had none yet);
-- the close above the upper or below the lower Bollinger band where the previous close was not. trade_id
-- names the bar (symbol@bar end in epoch ms; with the rule, the topic's dedup key), event_time is the bar's
-- end. z_score: the RSI, or the close in standard deviations from the sma; mean: the level or the sma.
-- The rule names are typed STRING: CHAR literals of different lengths would be padded to the longest.
CREATE TEMPORARY VIEW indicator_alerts AS
SELECT symbol, CONCAT(symbol, '@', CAST(bar_end_ms AS STRING)) AS trade_id, `rule`,
       bar_end_ms AS event_time, close_price AS price, CAST(NULL AS BIGINT) AS `size`, statistic AS z_score,
       centre AS `mean`, spread AS stddev, CAST(NULL AS BIGINT) AS detected_at
FROM (
    SELECT symbol, close_price, bar_end_ms,
           CASE WHEN rsi > ${indicators_rsi_overbought}
                     AND COALESCE(prev_rsi <= ${indicators_rsi_overbought}, TRUE)
                THEN CAST('rsi_overbought' AS STRING)
                WHEN rsi < ${indicators_rsi_oversold}
                     AND COALESCE(prev_rsi >= ${indicators_rsi_oversold}, TRUE)
                THEN CAST('rsi_oversold' AS STRING) END AS `rule`,
           rsi AS statistic,
           CAST(CASE WHEN rsi > ${indicators_rsi_overbought} THEN ${indicators_rsi_overbought}
                     ELSE ${indicators_rsi_oversold} END AS DOUBLE) AS centre,
           CAST(NULL AS DOUBLE) AS spread
    FROM bar_crossings
    UNION ALL
    SELECT symbol, close_price, bar_end_ms,
           CASE WHEN close_price > bollinger_upper AND COALESCE(prev_close <= prev_upper, TRUE)
                THEN CAST('bollinger_upper_break' AS STRING)
                WHEN close_price < bollinger_lower AND COALESCE(prev_close >= prev_lower, TRUE)
                THEN CAST('bollinger_lower_break' AS STRING) END AS `rule`,
           (close_price - sma) / NULLIF(sma_stddev, 0) AS statistic, sma AS centre, sma_stddev AS spread
    FROM bar_crossings
)
WHERE `rule` IS NOT NULL;

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

-- Every sink in one job that reads the topic once.
EXECUTE STATEMENT SET
BEGIN
    -- Sliding-window averages.
    INSERT INTO moving_averages
    SELECT symbol, ${windows_size_seconds}, ${windows_short_size_seconds}, window_start, window_end, avg_price, vwap,
           volume, trade_count
    FROM sliding_windows;

    -- Indicators per bar.
    INSERT INTO indicators
    SELECT symbol, ${windows_short_size_seconds}, bar_start, bar_end, close_price, sma, ewma, bollinger_upper,
           bollinger_lower, volatility, rsi, ema_fast, ema_slow, macd, macd_signal, macd_histogram, sma_long
    FROM bar_indicators;

    -- The indicators' alert rules, to the alert service.
    INSERT INTO indicator_alerts_kafka
    SELECT symbol, trade_id, `rule`, event_time, price, `size`, z_score, `mean`, stddev, detected_at
    FROM indicator_alerts;
END;
