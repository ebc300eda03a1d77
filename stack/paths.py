"""Where things live. Everything the stack writes is under STACK_DIR; downloads are under DEPS_DIR."""

from __future__ import annotations

import sys
from pathlib import Path

from marketpulse.config import stack_dir

REPO = Path(__file__).resolve().parent.parent
STACK_DIR = stack_dir()  # $MARKETPULSE_STACK_DIR or .stack, as this process started
DEPS_DIR = REPO / ".deps"
POM = REPO / "deps" / "pom.xml"
SCHEMA_DIR = REPO / "db" / "schema"
CONF_DIR = REPO / "conf"

KAFKA_JARS = DEPS_DIR / "kafka"
FLINK_CONNECTOR_JARS = DEPS_DIR / "flink-connectors"
FLINK_LIB_DIR = DEPS_DIR / "flink-lib"
FLINK_OPT_DIR = DEPS_DIR / "flink-opt"
FLINK_PLUGINS_DIR = DEPS_DIR / "flink-plugins"  # one folder per plugin: metrics-prometheus/

# The interpreter of the project's venv: Flink's Python workers must use the same one as the client.
PYTHON = Path(sys.executable)


def pyflink_home() -> Path:
    """The apache-flink pip package carries a full Flink distribution (bin/ lib/ opt/ conf/)."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def shown(path: Path) -> Path:
    """A path as progress lines show it: relative to the repository when inside it (a MARKETPULSE_STACK_DIR
    elsewhere stays absolute)."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path
