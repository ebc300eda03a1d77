"""Unit tests run without a stack: the PostgreSQL roles' passwords (which `make up` generates into the stack's
folder) come from a throw-away stack folder of their own, so rendering a SQL script or a connection string
neither needs nor reads a real .stack. Per test (monkeypatch), so the integration tests of the same run see
the real stack's folder again."""

from __future__ import annotations

import pytest

from marketpulse.config import POSTGRES_ROLES


@pytest.fixture(scope="session")
def unit_stack_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unit-stack")
    (folder / "secrets").mkdir()
    for role in POSTGRES_ROLES:
        (folder / "secrets" / f"postgres-{role}.password").write_text(f"unit-{role}-password\n")
    return folder


@pytest.fixture(autouse=True)
def unit_stack_secrets(unit_stack_dir, monkeypatch):
    monkeypatch.setenv("MARKETPULSE_STACK_DIR", str(unit_stack_dir))
    return unit_stack_dir
