-- One tumbling window size, as views: included as
--   -- include: include/tumbling_windows.sql window=long seconds=${windows_size_seconds}
-- it defines long_aggregates, long_opens, long_closes and long_windows over on_time_trades
-- (include/trades.sql) for windows of that many seconds. Every script and size shares this one text.
--
--   open / close   price of the trade with the smallest / largest (event_time, trade_id). FIRST_VALUE and
--                  LAST_VALUE follow arrival order, which differs between partitions and replays, so they
--                  are taken with a window Top-N (ROW_NUMBER ordered by event_time, trade_id, rn = 1, once
--                  ascending, once descending) and joined to the aggregates by (window, symbol) with window
--                  joins: final rows only, state freed when the window fires.
--   sum_dec, sum_sq_dec   exact DECIMAL sums of the prices and their squares, for a standard deviation that
--                  does not cancel (window_metrics.sql, indicators.sql).

-- Aggregates per symbol and ${seconds}-second window.
CREATE TEMPORARY VIEW ${window}_aggregates AS
SELECT window_start, window_end, symbol,
       COUNT(*) AS trade_count,
       SUM(CASE WHEN side = 'BUY' THEN 1 ELSE 0 END) AS buy_count,
       SUM(CASE WHEN side = 'SELL' THEN 1 ELSE 0 END) AS sell_count,
       SUM(size) AS volume,
       SUM(price * size) AS notional,
       MIN(price) AS min_price,
       MAX(price) AS max_price,
       AVG(price) AS avg_price,
       SUM(price_dec) AS sum_dec,
       SUM(price_dec * price_dec) AS sum_sq_dec
FROM TABLE(TUMBLE(TABLE on_time_trades, DESCRIPTOR(ts), INTERVAL '${seconds}' SECOND(3)))
GROUP BY window_start, window_end, symbol;

-- Open price per symbol and ${seconds}-second window: window Top-1 by (event_time, trade_id).
CREATE TEMPORARY VIEW ${window}_opens AS
SELECT window_start, window_end, symbol, price AS open_price
FROM (
    SELECT window_start, window_end, symbol, price,
           ROW_NUMBER() OVER (PARTITION BY window_start, window_end, symbol
                              ORDER BY event_time ASC, trade_id ASC) AS rn
    FROM TABLE(TUMBLE(TABLE on_time_trades, DESCRIPTOR(ts), INTERVAL '${seconds}' SECOND(3)))
)
WHERE rn = 1;

-- Close price per symbol and ${seconds}-second window: the same, descending. window_time (window_end -
-- 1 ms) stays an event-time attribute, for OVER windows over the closes (indicators.sql's bars).
CREATE TEMPORARY VIEW ${window}_closes AS
SELECT window_start, window_end, window_time, symbol, price AS close_price
FROM (
    SELECT window_start, window_end, window_time, symbol, price,
           ROW_NUMBER() OVER (PARTITION BY window_start, window_end, symbol
                              ORDER BY event_time DESC, trade_id DESC) AS rn
    FROM TABLE(TUMBLE(TABLE on_time_trades, DESCRIPTOR(ts), INTERVAL '${seconds}' SECOND(3)))
)
WHERE rn = 1;

-- One row per symbol and ${seconds}-second window: the aggregates joined to open and close.
CREATE TEMPORARY VIEW ${window}_windows AS
SELECT a.symbol, a.window_start, a.window_end, o.open_price, c.close_price, a.trade_count, a.buy_count,
       a.sell_count, a.volume, a.notional, a.min_price, a.max_price, a.avg_price, a.sum_dec, a.sum_sq_dec
FROM ${window}_aggregates AS a
JOIN ${window}_opens AS o
  ON a.window_start = o.window_start AND a.window_end = o.window_end AND a.symbol = o.symbol
JOIN ${window}_closes AS c
  ON a.window_start = c.window_start AND a.window_end = c.window_end AND a.symbol = c.symbol;
