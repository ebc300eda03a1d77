"""marketpulse.sqltemplate: the values the SQL scripts are rendered with."""

import pytest

from marketpulse.config import load_settings
from marketpulse.sqltemplate import TemplateError, render, seconds_text, sql_variables


@pytest.mark.parametrize(("milliseconds", "text"), [
    (2000, "2"), (1500, "1.5"), (1, "0.001"), (0, "0"), (10_000, "10"), (1_234_567, "1234.567"),
    (999_999, "999.999"),
])
def test_durations_are_exact_decimal_seconds(milliseconds, text):
    assert seconds_text(milliseconds) == text


def test_the_out_of_orderness_reaches_the_sql_exactly():
    settings = load_settings(environ={"MARKETPULSE_WINDOWS_MAX_OUT_OF_ORDERNESS_MS": "1234567"})
    assert sql_variables(settings)["max_out_of_orderness_seconds"] == "1234.567"  # was 1234.57 (:g)
    assert render("INTERVAL '${max_out_of_orderness_seconds}' SECOND(3)", sql_variables(settings)) == \
        "INTERVAL '1234.567' SECOND(3)"


def test_an_unknown_placeholder_names_the_known_ones():
    with pytest.raises(TemplateError, match=r"unknown placeholder\(s\) nope; known: a"):
        render("${nope}", {"a": 1})
