"""MarketPulse forecaster: `python -m forecaster` forecasts each symbol's next closes and tracks the errors.

Every forecast.refit_minutes (wall clock) it reads the newest forecast.history_bars one-minute bars
(windows.size_seconds) of each symbol from window_metrics (engine forecast.engine), and for every symbol with
a bar newer than its last forecast origin and at least forecast.min_bars bars, fits two models
(marketpulse/analytics/forecasting.py): ARIMA with its order chosen automatically, and a linear-trend
baseline. Each gives point forecasts and forecast.interval_level prediction intervals for the next
forecast.horizon_bars bars, written to `forecasts` (db/schema/011_forecasts.sql) with the upsert key
(symbol, bar_seconds, model, origin_start, target_start): origin_start is the last bar the model saw, so a
refit from the same bars rewrites the same rows. After each round it fills in the actual close of every target
bar that has happened and rewrites `forecast_errors`: MAE, MAPE and interval coverage per symbol and model.

Why a process of its own and not a Flink job: it refits every few minutes on a few hundred final rows that
are already in PostgreSQL, and a fit takes ~1 s of CPU per symbol (statsmodels); inside a Flink Python
operator that would hold back the bundle, the checkpoint barriers and the anomaly latency of the job it runs
in, and a second job would only wrap a timer around the same reads. Its input is event time (the bars'
window_start): the origin of a forecast is a bar, never the wall clock, so the backtest
(`python -m forecaster --backtest`: every refit_minutes of bars over the history already there, then the
error table) writes what the live loop would have written from those origins.

Failures: PostgreSQL down or the tables missing, a symbol with too few bars: one line each, and the next
round tries again; a symbol whose model cannot be fitted is skipped for that round with the reason.
"""
