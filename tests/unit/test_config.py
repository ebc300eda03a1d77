"""conf/pipeline.toml and its MARKETPULSE_<SECTION>_<KEY> overrides."""

import warnings

import pytest

from marketpulse.config import (
    POSTGRES_ROLES,
    ConfigError,
    DeprecatedSetting,
    configured_password,
    load_settings,
    postgres_dsn,
    postgres_jdbc_url,
    postgres_password,
    postgres_user,
    stack_secret_file,
)

DEFAULT_POSTGRES = (
    '[postgres]\nhost = "127.0.0.1"\nport = 5432\ndatabase = "marketpulse"\nowner_user = "marketpulse"\n'
    'writer_user = "w"\nreader_user = "r"\nowner_password = ""\nowner_password_file = ""\n')
HOSTILE = "p a'ss\"w\\rd;--%"  # a space, both quotes, a backslash, a statement end, a comment, a percent


def test_defaults_from_the_file():
    settings = load_settings(environ={})
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka.trades_partitions == 4
    assert settings.windows.size_seconds == 60
    assert postgres_jdbc_url(settings) == "jdbc:postgresql://127.0.0.1:5432/marketpulse"
    # No password in conf/: each comes from the environment, a file, or the local stack's secrets.
    assert [postgres_user(settings, role) for role in POSTGRES_ROLES] == [
        "marketpulse", "marketpulse_writer", "marketpulse_reader"]
    assert all(configured_password(settings, role) is None for role in POSTGRES_ROLES)


def test_environment_overrides_keep_the_type_of_the_default():
    settings = load_settings(environ={
        "MARKETPULSE_KAFKA_BOOTSTRAP_SERVERS": "broker:29092",
        "MARKETPULSE_KAFKA_TRADES_PARTITIONS": "8",
        "MARKETPULSE_DETECTOR_Z_THRESHOLD": "4.5",
        "MARKETPULSE_GENERATOR_SYMBOLS": "AAPL, MSFT",
    })
    assert settings.kafka.bootstrap_servers == "broker:29092"
    assert settings.kafka.trades_partitions == 8
    assert settings.detector.z_threshold == 4.5
    assert settings.generator.symbols == ["AAPL", "MSFT"]


def test_a_bad_override_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"MARKETPULSE_KAFKA_TRADES_PARTITIONS='four' is not a valid int"):
        load_settings(environ={"MARKETPULSE_KAFKA_TRADES_PARTITIONS": "four"})


def test_another_config_file(tmp_path):
    other = tmp_path / "other.toml"
    other.write_text('[kafka]\nbootstrap_servers = "k:1"\n')
    assert load_settings(environ={"MARKETPULSE_CONFIG": str(other)}).kafka.bootstrap_servers == "k:1"
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(environ={"MARKETPULSE_CONFIG": str(tmp_path / "missing.toml")})
    broken = tmp_path / "broken.toml"
    broken.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(broken, environ={})


def test_flat_names_for_templates():
    flat = load_settings(environ={}).flat()
    assert flat["kafka_trades_topic"] == "trades"
    assert flat["postgres_port"] == 5432


def test_the_old_name_of_the_grace_still_applies_with_a_warning(tmp_path):
    old_file = tmp_path / "old.toml"
    old_file.write_text("[windows]\nsize_seconds = 60\nallowed_lateness_seconds = 7\n")
    with pytest.warns(DeprecatedSetting, match=r"allowed_lateness_seconds in .* is now called grace_seconds"):
        windows = load_settings(old_file, environ={}).windows
    assert windows.grace_seconds == 7 and not hasattr(windows, "allowed_lateness_seconds")

    with pytest.warns(DeprecatedSetting, match="MARKETPULSE_WINDOWS_ALLOWED_LATENESS_SECONDS is now called"):
        settings = load_settings(environ={"MARKETPULSE_WINDOWS_ALLOWED_LATENESS_SECONDS": "3"})
    assert settings.windows.grace_seconds == 3
    with pytest.warns(DeprecatedSetting, match="ignored"):
        settings = load_settings(environ={"MARKETPULSE_WINDOWS_ALLOWED_LATENESS_SECONDS": "3",
                                          "MARKETPULSE_WINDOWS_GRACE_SECONDS": "4"})
    assert settings.windows.grace_seconds == 4


def test_the_new_name_alone_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_settings(environ={"MARKETPULSE_WINDOWS_GRACE_SECONDS": "2"}).windows.grace_seconds == 2


def test_a_password_comes_from_the_environment_then_its_file_then_the_stack(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKETPULSE_STACK_DIR", str(tmp_path / "stack"))
    secret = stack_secret_file("writer")
    assert secret == tmp_path / "stack" / "secrets" / "postgres-writer.password"
    settings = load_settings(environ={})
    with pytest.raises(ConfigError, match=r"no password for the PostgreSQL writer role: set "
                       r"MARKETPULSE_POSTGRES_WRITER_PASSWORD or postgres.writer_password_file, or run "
                       r"`make up`"):
        postgres_password(settings, "writer")
    secret.parent.mkdir(parents=True)
    secret.write_text("generated\n")
    assert postgres_password(settings, "writer") == "generated"
    password_file = tmp_path / "writer.password"
    password_file.write_text(HOSTILE + "\n")  # the editor's final newline is not part of it
    from_file = load_settings(environ={"MARKETPULSE_POSTGRES_WRITER_PASSWORD_FILE": str(password_file)})
    assert postgres_password(from_file, "writer") == HOSTILE
    both = load_settings(environ={"MARKETPULSE_POSTGRES_WRITER_PASSWORD_FILE": str(password_file),
                                  "MARKETPULSE_POSTGRES_WRITER_PASSWORD": "from env"})
    assert postgres_password(both, "writer") == "from env"
    missing = load_settings(environ={"MARKETPULSE_POSTGRES_READER_PASSWORD_FILE": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match=r"postgres.reader_password_file .*none: No such file"):
        postgres_password(missing, "reader")


def test_the_old_single_role_settings_apply_to_the_owner_with_a_warning(tmp_path):
    old_file = tmp_path / "old.toml"
    old_file.write_text(DEFAULT_POSTGRES.replace('owner_user = "marketpulse"', 'user = "app"'))
    with pytest.warns(DeprecatedSetting, match=r"\[postgres\] user in .* is now called owner_user"):
        settings = load_settings(old_file, environ={})
    assert postgres_user(settings, "owner") == "app"
    with pytest.warns(DeprecatedSetting, match="MARKETPULSE_POSTGRES_PASSWORD is now called "
                      "MARKETPULSE_POSTGRES_OWNER_PASSWORD"):
        settings = load_settings(environ={"MARKETPULSE_POSTGRES_PASSWORD": "old"})
    assert postgres_password(settings, "owner") == "old"


def test_the_connection_string_quotes_what_libpq_would_misread():
    from psycopg2.extensions import parse_dsn

    settings = load_settings(environ={"MARKETPULSE_POSTGRES_READER_PASSWORD": HOSTILE,
                                      "MARKETPULSE_POSTGRES_DATABASE": "market data"})
    # psycopg2's own parser (libpq's) reads back exactly the values.
    assert parse_dsn(postgres_dsn(settings, "reader")) == {
        "host": "127.0.0.1", "port": "5432", "dbname": "market data", "user": "marketpulse_reader",
        "password": HOSTILE}
    assert " user=marketpulse_reader " in postgres_dsn(settings, "reader")  # a plain value stays as it is
    for value in ("a b", "it's", "back\\slash", "tab\there", "\\'", " '"):
        quoted = load_settings(environ={"MARKETPULSE_POSTGRES_READER_PASSWORD": value})
        assert parse_dsn(postgres_dsn(quoted, "reader"))["password"] == value


def test_the_jdbc_url_encodes_the_database_name():
    settings = load_settings(environ={"MARKETPULSE_POSTGRES_DATABASE": "db/x?y z%",
                                      "MARKETPULSE_POSTGRES_HOST": "::1"})
    assert postgres_jdbc_url(settings) == "jdbc:postgresql://[::1]:5432/db%2Fx%3Fy%20z%25"
