"""Shared fixtures. Integration tests request `stack`: the real local stack (PostgreSQL, Kafka, Flink),
brought up once per test run by `python -m stack up` (a no-op when it is already up) and left running
for the next run; `make down` stops it."""

from __future__ import annotations

import os

# Before numpy is imported: the forecaster's ARIMA fits are 30x slower with OpenBLAS's threads on a loaded
# 2-core machine (forecaster/__main__.py does the same for the process). Processes the tests start inherit
# it; none of them multiplies matrices large enough to miss the threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import subprocess  # noqa: E402
import sys

import pytest

from marketpulse.config import Settings, load_settings
from tests import support


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings) -> Settings:
    result = subprocess.run([sys.executable, "-m", "stack", "up"], cwd=support.REPO,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"`python -m stack up` failed:\n{result.stderr[-3000:]}", pytrace=False)
    return settings


@pytest.fixture
def kafka_topic(stack):
    """Factory: a topic unique to this test, deleted afterwards. kafka_topic("trades", partitions=4)."""
    created = []

    def make(prefix: str = "test", partitions: int = 1) -> str:
        name = support.create_topic(stack, support.unique_name(prefix), partitions)
        created.append(name)
        return name

    yield make
    for name in created:
        support.delete_topic(stack, name)


@pytest.fixture
def pg(stack):
    conn = support.pg_connect(stack)
    yield conn
    conn.close()


@pytest.fixture
def scratch_db(stack):
    """Settings for a fresh database with the full schema, dropped after the test."""
    scratch = support.create_scratch_database(stack)
    yield scratch
    support.drop_scratch_database(stack, scratch)


@pytest.fixture
def jobs(stack):
    """Job ids appended here are cancelled after the test, whatever happens."""
    started: list[str] = []
    yield started
    for job_id in started:
        support.cancel_job(stack, job_id)
