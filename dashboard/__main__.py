"""python -m dashboard: Flask's development server on [dashboard] host:port (conf/pipeline.toml, or
MARKETPULSE_DASHBOARD_HOST / MARKETPULSE_DASHBOARD_PORT).

python -m dashboard --serve: gunicorn with [dashboard] workers x threads (dashboard.serve), what make demo,
docker-compose and Kubernetes run."""

import argparse

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true",
                        help="gunicorn ([dashboard] workers, threads) instead of the development server")
    # Imported after the choice: gunicorn's workers must import prometheus_client only once dashboard.serve
    # has set its multiprocess directory.
    if parser.parse_args().serve:
        from dashboard.serve import main
    else:
        from dashboard.app import main
    main()
