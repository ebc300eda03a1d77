"""conf/pipeline.toml and its MARKETPULSE_<SECTION>_<KEY> overrides."""

import warnings

import pytest

from marketpulse.config import ConfigError, DeprecatedSetting, load_settings, postgres_dsn, postgres_jdbc_url


def test_defaults_from_the_file():
    settings = load_settings(environ={})
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka.trades_partitions == 4
    assert settings.windows.size_seconds == 60
    assert postgres_jdbc_url(settings) == "jdbc:postgresql://127.0.0.1:5432/marketpulse"
    assert postgres_dsn(settings) == (
        "host=127.0.0.1 port=5432 dbname=marketpulse user=marketpulse password=marketpulse")


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
