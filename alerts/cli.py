"""Command line of the alert service: settings from conf/pipeline.toml [alerts] (MARKETPULSE_ALERTS_<KEY>)."""

from __future__ import annotations

import argparse

from alerts import __doc__ as CONTRACT
from alerts.config import AlertConfig
from alerts.service import AlertService, StopFlag, say
from alerts.store import SchemaMissing
from marketpulse.config import ConfigError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m alerts", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=CONTRACT.split("\n\n")[0],
        epilog="Settings: the [alerts] section of conf/pipeline.toml; any key can be overridden with "
               "MARKETPULSE_ALERTS_<KEY>, e.g. MARKETPULSE_ALERTS_WEBHOOK_URL=https://example.org/hook.")
    parser.parse_args(argv)
    try:
        settings = load_settings()
        config = AlertConfig.from_settings(settings)
    except ConfigError as err:
        say(f"error: {err}")
        return 2
    stop = StopFlag()
    stop.install()
    try:
        return AlertService(settings, config, stop).run()
    except SchemaMissing as err:
        say(f"error: {err}")
        return 1
    except ValueError as err:  # e.g. a setting the channels cannot use
        say(f"error: {err}")
        return 2
