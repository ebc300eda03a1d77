-- MarketPulse PostgreSQL schema, version 8: whether the market a live source follows is open.
-- Written by the generator's live sources (python -m generator --source yahoo|alphavantage
-- --status-to-postgres, generator/live.py) on every poll cycle and while idling; read by the dashboard,
-- which says "market closed" (with the next open) instead of leaving the charts unexplained. A row older
-- than a few minutes means its source has stopped, and the dashboard ignores it.
CREATE TABLE market_status (
    source      text PRIMARY KEY,           -- yahoo | alphavantage
    exchange    text NOT NULL,              -- exchange_calendars code, e.g. XNYS
    is_open     boolean NOT NULL,
    next_open   timestamptz,
    next_close  timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
