-- MarketPulse PostgreSQL schema, version 14: calibrated forecast intervals. The forecaster widens (or
-- narrows) each model's interval by a factor learnt from its own scored forecasts (split conformal,
-- marketpulse/analytics/forecasting.py); [lower, upper] is the calibrated interval users see, and
-- interval_scale the factor it was multiplied by, so the model's own half-width, (upper - lower) / 2 /
-- interval_scale, is what the next calibration scores against. 1: not calibrated (every row before this
-- version, and a model with too few scored forecasts yet).
ALTER TABLE forecasts ADD COLUMN interval_scale DOUBLE PRECISION NOT NULL DEFAULT 1;
