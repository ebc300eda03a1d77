"""stack/jarrun.py: submitting the DataStream job through the JobManager's REST API (the parts without a
cluster: arguments, the password guard, error lines; tests/pipeline.submit_datastream runs it for real)."""

from __future__ import annotations

from pathlib import Path

from jobs.market_metrics import env_overrides, parse_args
from stack import jarrun

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "flink"


def test_the_callers_settings_travel_as_env_arguments_and_nothing_else():
    environ = {"MARKETPULSE_KAFKA_TRADES_TOPIC": "t1", "PATH": "/bin",
               "MARKETPULSE_POSTGRES_DATABASE": "db x", "HOME": "/root"}
    args = jarrun.environment_args(environ)
    assert args == ["--env", "MARKETPULSE_KAFKA_TRADES_TOPIC=t1",
                    "--env", "MARKETPULSE_POSTGRES_DATABASE=db x"]
    # ... and the job reads them back as they were.
    parsed = parse_args(["--start-from", "earliest", *args])
    assert env_overrides(parsed.env) == {"MARKETPULSE_KAFKA_TRADES_TOPIC": "t1",
                                         "MARKETPULSE_POSTGRES_DATABASE": "db x"}


def test_a_password_is_never_sent_as_a_program_argument():
    assert jarrun.can_submit({"MARKETPULSE_KAFKA_TRADES_TOPIC": "t"})
    assert not jarrun.can_submit({"MARKETPULSE_POSTGRES_PASSWORD": "secret"})
    assert not jarrun.can_submit({"MARKETPULSE_POSTGRES_WRITER_PASSWORD": "secret"})
    # A password file's name is no secret: the JobManager reads the file on this machine.
    assert jarrun.can_submit({"MARKETPULSE_POSTGRES_WRITER_PASSWORD_FILE": "/run/secrets/writer"})


def test_the_job_refuses_an_env_argument_that_is_not_a_setting():
    import pytest

    with pytest.raises(SystemExit, match="MARKETPULSE_NAME=VALUE"):
        env_overrides(["PATH=/tmp"])
    with pytest.raises(SystemExit):
        env_overrides(["MARKETPULSE_X"])


def test_a_failed_run_is_reduced_to_one_line():
    """A real answer of POST /jars/<id>/run whose Python program exited with 1 (captured from Flink 2.2.1)."""
    body = (FIXTURES / "jar_run_python_failed.json").read_bytes()
    assert jarrun.failure(body) == "java.lang.RuntimeException: Python process exits with code: 1"
    assert jarrun.failure(b"not json") == "not json"
