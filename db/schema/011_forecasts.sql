-- MarketPulse PostgreSQL schema, version 11: the forecaster's output (python -m forecaster, forecaster/;
-- models and error definitions in marketpulse/analytics/forecasting.py, settings in [forecast]).

-- One row per (model, origin, target bar): the forecast of the target bar's close made from the bars up to
-- and including the origin bar. The key is the upsert key: a refit from the same origin rewrites its rows,
-- so a restart or a backtest over the same bars changes nothing.
CREATE TABLE forecasts (
    symbol        TEXT NOT NULL,
    bar_seconds   INTEGER NOT NULL,          -- windows.size_seconds: the window_metrics bars forecast
    model         TEXT NOT NULL,             -- 'arima' | 'linear'
    origin_start  TIMESTAMPTZ NOT NULL,      -- window_start of the last bar the model saw
    target_start  TIMESTAMPTZ NOT NULL,      -- window_start of the bar whose close is forecast
    horizon       INTEGER NOT NULL,          -- bars after the origin: 1..forecast.horizon_bars
    engine        TEXT NOT NULL,             -- whose window_metrics rows were read
    spec          TEXT NOT NULL,             -- what was fitted: 'ARIMA(1,1,0)', 'linear trend', 'constant'
    bars_used     INTEGER NOT NULL,
    origin_close  DOUBLE PRECISION NOT NULL, -- the origin bar's close: where the band starts on the chart
    point         DOUBLE PRECISION NOT NULL,
    lower         DOUBLE PRECISION NOT NULL,
    upper         DOUBLE PRECISION NOT NULL,
    level         DOUBLE PRECISION NOT NULL, -- of the interval [lower, upper], e.g. 0.95
    actual        DOUBLE PRECISION,          -- the target bar's close, once it is in window_metrics
    -- ... and whether that close is a trade the detector flagged (price_zscore or price_jump in `anomalies`):
    -- a one-trade spike that happened to close the bar says nothing about the forecast; not scored.
    actual_flagged BOOLEAN,
    made_at       TIMESTAMPTZ NOT NULL DEFAULT now(),  -- wall clock of the fit; not deterministic
    PRIMARY KEY (symbol, bar_seconds, model, origin_start, target_start)
);
-- The dashboard's newest forecast of a symbol at or before its last candle.
CREATE INDEX forecasts_by_origin ON forecasts (symbol, bar_seconds, origin_start DESC);
-- The forecaster's search for forecasts whose target has happened.
CREATE INDEX forecasts_awaiting_actual ON forecasts (target_start) WHERE actual IS NULL;

-- Errors per (symbol, bar size, model) over every forecast whose target bar has a close, recomputed from
-- `forecasts` after each refit.
CREATE TABLE forecast_errors (
    symbol        TEXT NOT NULL,
    bar_seconds   INTEGER NOT NULL,
    model         TEXT NOT NULL,
    forecasts     INTEGER NOT NULL,          -- forecasts with an actual close, scored
    flagged       INTEGER NOT NULL,          -- forecasts whose actual close was a flagged trade: not scored
    mae           DOUBLE PRECISION,          -- mean |actual - point|, in price units
    mape          DOUBLE PRECISION,          -- mean |actual - point| / |actual|, in %
    coverage      DOUBLE PRECISION,          -- share of actuals inside [lower, upper]
    level         DOUBLE PRECISION,          -- the intervals' level (the newest scored forecast's)
    spec          TEXT,                      -- the newest scored forecast's spec (earlier ones may differ)
    first_target  TIMESTAMPTZ,
    last_target   TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, bar_seconds, model)
);
