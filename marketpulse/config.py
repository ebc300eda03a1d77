"""Settings: conf/pipeline.toml, overridden by MARKETPULSE_<SECTION>_<KEY> environment variables.

Every component reads its endpoints through this module, so no address is written twice in the repo:

    from marketpulse.config import load_settings
    settings = load_settings()
    settings.kafka.bootstrap_servers   # "127.0.0.1:9092", or $MARKETPULSE_KAFKA_BOOTSTRAP_SERVERS
"""

from __future__ import annotations

import os
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
DEFAULT_CONFIG_FILE = CONF_DIR / "pipeline.toml"
ENV_PREFIX = "MARKETPULSE_"


class ConfigError(ValueError):
    """A setting is missing or an override cannot be read as the type of its default."""


class DeprecatedSetting(UserWarning):
    """A setting was given under a name it no longer has; it still applies under its new name."""


# (section, old key) -> new key. The old name is read from the config file and from the environment
# (MARKETPULSE_<SECTION>_<OLD KEY>) unless the new one is set there too.
RENAMED_SETTINGS = {
    # Not Flink's allowed lateness (which revises fired windows): a delay of each window's one final row.
    ("windows", "allowed_lateness_seconds"): "grace_seconds",
    # Gated both z-scores; the price z-score has a floor in ticks instead (marketpulse.analytics.detector).
    ("detector", "min_stddev"): "volume_min_stddev",
    # One role served everything until the owner/writer/reader split (README "Database roles and passwords").
    ("postgres", "user"): "owner_user",
    ("postgres", "password"): "owner_password",
}


def _coerce(raw: str, default: Any, name: str) -> Any:
    """Reads an environment string as the type of the value it overrides."""
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, list):
            return [item.strip() for item in raw.split(",") if item.strip()]
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a valid {type(default).__name__} (default {default!r})"
        ) from None
    return raw


def apply_env_overrides(data: dict[str, dict[str, Any]], environ: Mapping[str, str]) -> list[str]:
    """Overrides settings in place from MARKETPULSE_<SECTION>_<KEY>; returns the names applied."""
    applied = []
    for section, values in data.items():
        for key, default in values.items():
            name = f"{ENV_PREFIX}{section}_{key}".upper()
            if name in environ:
                values[key] = _coerce(environ[name], default, name)
                applied.append(name)
    return applied


def apply_renamed_settings(data: dict[str, dict[str, Any]], environ: Mapping[str, str],
                           source: Path | str = "the config file") -> list[str]:
    """Moves settings given under an old name (RENAMED_SETTINGS) to their new name, with a warning; the new
    name wins where both are given. Returns the old names that were applied."""
    applied = []
    for (section, old), new in RENAMED_SETTINGS.items():
        values = data.get(section)
        if values is None:
            continue
        old_env = f"{ENV_PREFIX}{section}_{old}".upper()
        new_env = f"{ENV_PREFIX}{section}_{new}".upper()
        if old in values:
            value = values.pop(old)
            if new not in values:
                values[new] = value
            warnings.warn(f"[{section}] {old} in {source} is now called {new}"
                          + ("" if values[new] == value else f" (ignored: {new} is set too)"),
                          DeprecatedSetting, stacklevel=3)
            applied.append(f"{section}.{old}")
        if old_env in environ:
            if new_env not in environ and new in values:
                values[new] = _coerce(environ[old_env], values[new], old_env)
            warnings.warn(f"{old_env} is now called {new_env}"
                          + (" (ignored: that is set too)" if new_env in environ else ""),
                          DeprecatedSetting, stacklevel=3)
            applied.append(old_env)
    return applied


class Settings(SimpleNamespace):
    """Sections as attributes (settings.kafka.trades_topic); `as_dict()` for templates."""

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dict(vars(section)) for name, section in vars(self).items()}

    def flat(self) -> dict[str, Any]:
        """{"kafka_bootstrap_servers": ..., ...}: the names SQL templates use as ${...}."""
        return {
            f"{section}_{key}": value
            for section, values in self.as_dict().items()
            for key, value in values.items()
        }


def load_settings(
    path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    environ = os.environ if environ is None else environ
    config_file = Path(path or environ.get("MARKETPULSE_CONFIG") or DEFAULT_CONFIG_FILE)
    try:
        data = tomllib.loads(config_file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {config_file}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{config_file} is not valid TOML: {err}") from None
    apply_renamed_settings(data, environ, config_file)
    apply_env_overrides(data, environ)
    return Settings(**{name: SimpleNamespace(**values) for name, values in data.items()})


# The PostgreSQL roles (README "Database roles and passwords"): the owner applies db/schema/ and
# db/grants.sql; the writer (Flink jobs, generator, alert service, forecaster) reads and upserts rows; the
# reader (dashboard, make score, make check) only reads.
POSTGRES_ROLES = ("owner", "writer", "reader")


def stack_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the local stack keeps its state (stack/paths.py's STACK_DIR): $MARKETPULSE_STACK_DIR or
    .stack."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("MARKETPULSE_STACK_DIR") or REPO_ROOT / ".stack")


def stack_secret_file(role: str, environ: Mapping[str, str] | None = None) -> Path:
    """The password `make up` generated for a role that was given none (mode 600)."""
    return stack_dir(environ) / "secrets" / f"postgres-{role}.password"


def _role(role: str) -> str:
    if role not in POSTGRES_ROLES:
        raise ValueError(f"unknown PostgreSQL role {role!r} (one of {', '.join(POSTGRES_ROLES)})")
    return role


def postgres_user(settings: Settings, role: str) -> str:
    return getattr(settings.postgres, f"{_role(role)}_user")


def secret_setting(settings: Settings, section: str, key: str) -> str | None:
    """A secret setting: <key> (from its environment variable; never written in conf/), else the contents of
    the file <key>_file names (all of it but a final newline), else None."""
    values = getattr(settings, section)
    value = getattr(values, key, "")
    if value:
        return value
    file_name = getattr(values, f"{key}_file", "")
    if not file_name:
        return None
    try:
        # A password may hold any character; only the newline an editor adds at the end is not part of it.
        value = Path(file_name).expanduser().read_text().removesuffix("\n").removesuffix("\r")
    except OSError as err:
        raise ConfigError(f"{section}.{key}_file {file_name}: {err.strerror}") from None
    if not value:
        raise ConfigError(f"{section}.{key}_file {file_name} is empty")
    return value


def configured_password(settings: Settings, role: str) -> str | None:
    """The role's password from the settings ($MARKETPULSE_POSTGRES_<ROLE>_PASSWORD, then
    <role>_password_file), or None: then the local stack's generated one applies."""
    return secret_setting(settings, "postgres", f"{_role(role)}_password")


def postgres_password(settings: Settings, role: str, environ: Mapping[str, str] | None = None) -> str:
    """The role's password: configured (configured_password), else the one `make up` generated (in the stack
    folder of `environ`, by default this process's)."""
    password = configured_password(settings, role)
    if password is not None:
        return password
    secret = stack_secret_file(role, environ)
    try:
        return secret.read_text().strip()
    except OSError:
        upper = role.upper()
        raise ConfigError(f"no password for the PostgreSQL {role} role: set "
                          f"MARKETPULSE_POSTGRES_{upper}_PASSWORD or postgres.{role}_password_file, or run "
                          f"`make up`, which generates {secret}") from None


def postgres_connect_args(settings: Settings, role: str,
                          environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """psycopg2.connect(**args) as `role`: keyword arguments, so no value needs quoting."""
    pg = settings.postgres
    return {"host": pg.host, "port": pg.port, "dbname": pg.database, "user": postgres_user(settings, role),
            "password": postgres_password(settings, role, environ)}


def postgres_dsn(settings: Settings, role: str) -> str:
    """A libpq connection string (psycopg2) as `role`, every value quoted as libpq reads it."""
    from psycopg2.extensions import make_dsn

    return make_dsn(**postgres_connect_args(settings, role))


def postgres_jdbc_url(settings: Settings) -> str:
    """The same database as a JDBC URL (Flink's JDBC connector); credentials are separate options. The
    database name is percent-encoded (the driver decodes it); an IPv6 host goes in brackets."""
    pg = settings.postgres
    host = f"[{pg.host}]" if ":" in pg.host and not pg.host.startswith("[") else pg.host
    return f"jdbc:postgresql://{host}:{pg.port}/{quote(pg.database, safe='')}"
