"""The [forecast] section of conf/pipeline.toml as typed values (MARKETPULSE_FORECAST_<KEY> overrides it)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from marketpulse.config import ConfigError, Settings

# Used for keys a replaced config file (MARKETPULSE_CONFIG) does not have.
DEFAULTS = {
    "refit_minutes": 5.0,
    "horizon_bars": 10,
    "history_bars": 120,
    "min_bars": 20,
    "interval_level": 0.95,
    "engine": "datastream",
    "max_p": 2,
    "max_d": 1,
    "max_q": 2,
    "calibration_scores": 200,
    "calibration_min_scores": 50,
}
ENGINES = ("datastream", "sql")


@dataclass(frozen=True)
class ForecastConfig:
    refit_minutes: float
    horizon_bars: int
    history_bars: int
    min_bars: int
    interval_level: float
    engine: str
    max_p: int
    max_d: int
    max_q: int
    calibration_scores: int      # the last this many scored forecasts per symbol and model calibrate; 0 = off
    calibration_min_scores: int  # fewer: the symbol's model takes every symbol's scores, fewer still: none
    bar_seconds: int  # windows.size_seconds: the bars are the long windows, not a setting of their own

    @property
    def refit_bars(self) -> int:
        """Bars between two refits (at least 1): the backtest's step."""
        return max(1, round(self.refit_minutes * 60 / self.bar_seconds))

    def describe(self) -> str:
        return (f"ARIMA (d <= {self.max_d} by KPSS, p <= {self.max_p}, q <= {self.max_q} by AIC) and a "
                f"linear trend on the {self.engine} engine's {self.bar_seconds} s bars: the last "
                f"{self.history_bars} bars (at least {self.min_bars}), the next {self.horizon_bars} bars "
                f"with {self.interval_level:.0%} intervals"
                + (f" calibrated on the last {self.calibration_scores} scored forecasts"
                   if self.calibration_scores else "")
                + f", refitted every {self.refit_minutes:g} min")

    @classmethod
    def from_settings(cls, settings: Settings) -> ForecastConfig:
        present = getattr(settings, "forecast", None)
        section = {**DEFAULTS, **(vars(present) if present is not None else {})}
        unknown = set(section) - set(DEFAULTS)
        if unknown:
            raise ConfigError(f"[forecast] has unknown key(s): {', '.join(sorted(unknown))}")
        try:
            config = cls(**{f.name: type(DEFAULTS[f.name])(section[f.name])
                            for f in fields(cls) if f.name != "bar_seconds"},
                         bar_seconds=int(settings.windows.size_seconds))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"[forecast]: {err}") from None
        checks = [("refit_minutes", config.refit_minutes > 0), ("horizon_bars", config.horizon_bars >= 1),
                  ("min_bars", config.min_bars >= max(8, config.max_p + config.max_q + config.max_d + 3)),
                  ("history_bars", config.history_bars >= config.min_bars),
                  ("interval_level", 0 < config.interval_level < 1), ("engine", config.engine in ENGINES),
                  ("max_p", 0 <= config.max_p <= 5), ("max_d", 0 <= config.max_d <= 2),
                  ("max_q", 0 <= config.max_q <= 5), ("calibration_scores", config.calibration_scores >= 0),
                  ("calibration_min_scores", config.calibration_min_scores >= 1)]
        for key, ok in checks:
            if not ok:
                raise ConfigError(f"forecast.{key} = {getattr(config, key)!r} is out of range"
                                  + (f" (engines: {', '.join(ENGINES)})" if key == "engine" else ""))
        return config
