"""python -m dashboard: serves the dashboard on [dashboard] host:port (conf/pipeline.toml, or
MARKETPULSE_DASHBOARD_HOST / MARKETPULSE_DASHBOARD_PORT)."""

from dashboard.app import main

if __name__ == "__main__":
    main()
