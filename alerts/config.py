"""The [alerts] section of conf/pipeline.toml as typed values (MARKETPULSE_ALERTS_<KEY> overrides it)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from urllib.parse import urlsplit

from marketpulse.config import ConfigError, Settings

CHANNELS = ("log", "webhook", "slack")

# Used for keys a replaced config file (MARKETPULSE_CONFIG) does not have.
DEFAULTS = {
    "channels": ["log", "webhook", "slack"],
    "webhook_url": "",
    "slack_webhook_url": "",
    "cooldown_seconds": 60,
    "max_age_seconds": 60,
    "retries": 4,
    "backoff_initial_ms": 500,
    "backoff_multiplier": 2.0,
    "backoff_max_ms": 10_000,
    "timeout_seconds": 5.0,
    "consumer_group": "marketpulse-alerts",
    "batch_max_records": 200,
    "progress_seconds": 30,
    "strip_rows": 8,
}


@dataclass(frozen=True)
class AlertConfig:
    channels: tuple[str, ...]
    webhook_url: str
    slack_webhook_url: str
    cooldown_seconds: float
    max_age_seconds: float
    retries: int
    backoff_initial_ms: int
    backoff_multiplier: float
    backoff_max_ms: int
    timeout_seconds: float
    consumer_group: str
    batch_max_records: int
    progress_seconds: float
    strip_rows: int

    @property
    def cooldown_ms(self) -> int:
        return int(round(self.cooldown_seconds * 1000))

    @property
    def max_age_ms(self) -> int:
        return int(round(self.max_age_seconds * 1000))

    def active_channels(self) -> list[str]:
        """Channels listed and usable: webhook and slack need their URL."""
        urls = {"webhook": self.webhook_url, "slack": self.slack_webhook_url}
        return [name for name in self.channels if name == "log" or urls.get(name)]

    def inactive_notes(self) -> list[str]:
        """Why a listed channel is off, one phrase each (for the start-up line)."""
        notes = []
        for name, key in (("webhook", "webhook_url"), ("slack", "slack_webhook_url")):
            if name in self.channels and not getattr(self, key):
                notes.append(f"{name} off (no alerts.{key}; set MARKETPULSE_ALERTS_{key.upper()})")
        return notes

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertConfig:
        present = getattr(settings, "alerts", None)
        section = {**DEFAULTS, **(vars(present) if present is not None else {})}
        unknown = set(section) - set(DEFAULTS)
        if unknown:
            raise ConfigError(f"[alerts] has unknown key(s): {', '.join(sorted(unknown))}")
        channels = section["channels"]
        if isinstance(channels, str):
            channels = [c.strip() for c in channels.split(",") if c.strip()]
        channels = tuple(c.lower() for c in channels)
        bad = [c for c in channels if c not in CHANNELS]
        if bad:
            raise ConfigError(f"alerts.channels: unknown channel(s) {', '.join(bad)}; "
                              f"choose from {', '.join(CHANNELS)}")
        try:
            values = {f.name: section[f.name] for f in fields(cls) if f.name != "channels"}
            config = cls(
                channels=channels,
                webhook_url=str(values["webhook_url"]).strip(),
                slack_webhook_url=str(values["slack_webhook_url"]).strip(),
                cooldown_seconds=float(values["cooldown_seconds"]),
                max_age_seconds=float(values["max_age_seconds"]),
                retries=int(values["retries"]),
                backoff_initial_ms=int(values["backoff_initial_ms"]),
                backoff_multiplier=float(values["backoff_multiplier"]),
                backoff_max_ms=int(values["backoff_max_ms"]),
                timeout_seconds=float(values["timeout_seconds"]),
                consumer_group=str(values["consumer_group"]),
                batch_max_records=int(values["batch_max_records"]),
                progress_seconds=float(values["progress_seconds"]),
                strip_rows=int(values["strip_rows"]),
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"[alerts]: {err}") from None
        for key in ("webhook_url", "slack_webhook_url"):
            url = getattr(config, key)
            if url and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc):
                raise ConfigError(f"alerts.{key} is not an http(s) URL: {redact(url)}")
        checks = [("cooldown_seconds", config.cooldown_seconds >= 0),
                  ("max_age_seconds", config.max_age_seconds >= 0), ("retries", config.retries >= 0),
                  ("backoff_initial_ms", config.backoff_initial_ms >= 0),
                  ("backoff_multiplier", config.backoff_multiplier >= 1),
                  ("backoff_max_ms", config.backoff_max_ms >= 0),
                  ("timeout_seconds", config.timeout_seconds > 0),
                  ("batch_max_records", config.batch_max_records >= 1),
                  ("consumer_group", bool(config.consumer_group))]
        for key, ok in checks:
            if not ok:
                raise ConfigError(f"alerts.{key} = {getattr(config, key)!r} is out of range")
        return config


def redact(url: str) -> str:
    """scheme://host[:port]/… : a webhook URL's path often is its secret (Slack's is), never log it."""
    parts = urlsplit(url)
    if not parts.netloc:
        return "<not a URL>"
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ":?"
    return f"{parts.scheme}://{host}{port}" + ("/…" if parts.path not in ("", "/") else "")
