"""A contract is written once. The window row's columns are WindowMetrics' fields
(marketpulse.analytics.WINDOW_METRICS_COLUMNS), imported wherever Python needs them. This fails when a
module or a test spells the list out again (the SQL scripts and the sink DDL declare typed columns, which
tests/unit/test_sql_scripts_static.py checks against the PostgreSQL tables). The anomaly rules and their
labels are marketpulse.analytics.detector's RULES and RULE_LABELS."""

import re
from pathlib import Path

from marketpulse.analytics import WINDOW_METRICS_COLUMNS

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("marketpulse", "dashboard", "alerts", "generator", "jobs", "stack", "bench", "tests")
# Five value columns in a row, quoted, as a literal copy would have them ("open", "high", ..., "vwap").
RUN = re.compile(r"""["']open["'],\s*["']high["'],\s*["']low["'],\s*["']close["'],\s*["']vwap["']""")


def test_the_window_columns_are_listed_once():
    copies = [path.relative_to(REPO).as_posix() for folder in FOLDERS
              for path in (REPO / folder).rglob("*.py")
              if RUN.search(path.read_text()) and path != Path(__file__).resolve()]
    assert copies == []
    assert WINDOW_METRICS_COLUMNS[:2] == ("symbol", "window_seconds")  # the key prefix the dashboard drops


# The rule names as a literal tuple or label dict, as a copy of RULES / RULE_LABELS would have them.
RULE_COPY = re.compile(r"""["']price_zscore["'](:\s*["'][^"']+["'])?,\s*["']price_jump["']""")


def test_the_rule_names_and_labels_are_defined_once():
    detector = REPO / "marketpulse" / "analytics" / "detector.py"
    # Tests may spell rules out in expected values; a module may not.
    copies = [path.relative_to(REPO).as_posix() for folder in FOLDERS if folder != "tests"
              for path in (REPO / folder).rglob("*.py")
              if path != detector and RULE_COPY.search(path.read_text())]
    assert copies == []
