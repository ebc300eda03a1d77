-- One doubling step of include/ema.sql (which explains the construction), e.g. name=ewma half=4 terms=8.

-- ${name} over ${terms} bars: the sums n (values times weights) and d (weights) over ${half} bar(s),
-- plus the same sums ${half} bar(s) back times q^${half}, q = 1 - 2 / (${span} + 1); LAG is 0 before the
-- symbol's first bar, so the first bars weigh only the values there are.
CREATE TEMPORARY VIEW ${name}_${terms} AS
SELECT *,
       ${name}_n${half} + POWER(CAST(${span} - 1 AS DOUBLE) / (${span} + 1), ${half})
           * COALESCE(LAG(${name}_n${half}, ${half}) OVER w, 0.0) AS ${name}_n${terms},
       ${name}_d${half} + POWER(CAST(${span} - 1 AS DOUBLE) / (${span} + 1), ${half})
           * COALESCE(LAG(${name}_d${half}, ${half}) OVER w, 0.0) AS ${name}_d${terms}
FROM ${name}_${half}
WINDOW w AS (PARTITION BY symbol ORDER BY bar_time);
