"""Command line of the forecaster: settings from [forecast] of conf/pipeline.toml (MARKETPULSE_FORECAST_*)."""

from __future__ import annotations

import argparse

from alerts.service import StopFlag
from forecaster import __doc__ as CONTRACT
from forecaster.config import ForecastConfig
from forecaster.service import Forecaster, say
from forecaster.store import SchemaMissing
from marketpulse.config import ConfigError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m forecaster", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=CONTRACT.split("\n\n")[0],
        epilog="Settings: the [forecast] section of conf/pipeline.toml; any key can be overridden with "
               "MARKETPULSE_FORECAST_<KEY>, e.g. MARKETPULSE_FORECAST_REFIT_MINUTES=1.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true",
                      help="one round (fit the symbols with a new bar, score), print the error table, exit")
    mode.add_argument("--backtest", action="store_true",
                      help="forecast from every forecast.refit_minutes of the bars already in PostgreSQL, as "
                           "the live loop would have, score them, print the error table, exit")
    parser.add_argument("--every", type=int, metavar="BARS",
                        help="with --backtest: an origin every BARS bars instead (1 = every bar)")
    args = parser.parse_args(argv)
    if args.every is not None and (not args.backtest or args.every < 1):
        parser.error("--every takes a number of bars >= 1, with --backtest")
    stop = StopFlag()
    try:
        settings = load_settings()
        config = ForecastConfig.from_settings(settings)
        forecaster = Forecaster(settings, config, stop)  # resolves the writer's password
    except ConfigError as err:
        say(f"error: {err}")
        return 2
    stop.install()
    try:
        if args.backtest:
            return forecaster.once(backtest_step=args.every or config.refit_bars)
        return forecaster.once() if args.once else forecaster.run()
    except SchemaMissing as err:
        say(f"error: {err}")
        return 1
