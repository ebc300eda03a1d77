-- An exponential moving average of one column over each symbol's bars, as views: included as
--   -- include: include/ema.sql name=ema_fast span=${indicators_ema_fast_span} from=bars value=close_price
-- it defines with_ema_fast: every column of bars plus ema_fast (and the partial sums behind it).
-- Every EMA of sql/indicators.sql (ewma, ema_fast, ema_slow, the MACD signal) is this one text.
--
--   ${name}_t = sum_{i=0..k} q^i x_{t-i} / sum_{i=0..k} q^i,   q = 1 - 2 / (span + 1),  k = min(t, 127)
--
-- SQL has no recursion, so the recursive EMA e_t = (1 - q) x_t + q e_{t-1} cannot be written; its weights
-- over the last 128 bars can, normalised by the weights present: pandas ewm(span, adjust=True) over those
-- 128 values. The sums are built by doubling, not with 127 LAG calls: n_2 = n_1 + q * n_1 one bar back,
-- n_4 = n_2 + q^2 * n_2 two bars back, ... n_128 (include/ema_step.sql), the weights d the same way. What
-- the truncation leaves out is q^128 of the recursive EMA's weight: 5.3e-5 for span 26, 3.3e-4 for span
-- 32; marketpulse/sqltemplate.py refuses a span whose share would exceed 0.1 % (above 37).

-- ${name}, one term: the value itself, weight 1.
CREATE TEMPORARY VIEW ${name}_1 AS
SELECT *, ${value} AS ${name}_n1, CAST(1.0 AS DOUBLE) AS ${name}_d1
FROM ${from};

-- include: ema_step.sql name=${name} span=${span} half=1 terms=2
-- include: ema_step.sql name=${name} span=${span} half=2 terms=4
-- include: ema_step.sql name=${name} span=${span} half=4 terms=8
-- include: ema_step.sql name=${name} span=${span} half=8 terms=16
-- include: ema_step.sql name=${name} span=${span} half=16 terms=32
-- include: ema_step.sql name=${name} span=${span} half=32 terms=64
-- include: ema_step.sql name=${name} span=${span} half=64 terms=128

-- The rows of ${from} with ${name}: the weighted sum of the last 128 values over the sum of their weights.
CREATE TEMPORARY VIEW with_${name} AS
SELECT *, ${name}_n128 / ${name}_d128 AS ${name}
FROM ${name}_128;
