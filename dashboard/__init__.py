"""MarketPulse dashboard (Dash): market overview, symbol charts, anomalies and pipeline health, read
from PostgreSQL and Flink's REST API. `python -m dashboard` serves it; see dashboard/app.py."""
