"""marketpulse.alert_rules: one label and one way to read the statistic for every rule an alert can have."""

import pytest

from marketpulse.alert_rules import ALERT_RULE_LABELS, INDICATOR_RULES, statistic_text
from marketpulse.analytics.detector import RULES


def test_every_rule_has_a_label():
    assert set(ALERT_RULE_LABELS) == set(RULES) | set(INDICATOR_RULES)
    assert len(set(ALERT_RULE_LABELS.values())) == len(ALERT_RULE_LABELS)


@pytest.mark.parametrize(("rule", "value", "digits", "text"), [
    ("price_jump", 3.456, 2, "+3.46%"),
    ("price_zscore", -6.123, 2, "z -6.12"),
    ("volume_zscore", 4.8, 1, "z +4.8"),
    ("rsi_overbought", 72.44, 2, "RSI 72.4"),
    ("rsi_oversold", 28.06, 1, "RSI 28.1"),
    ("bollinger_upper_break", 2.3149, 2, "+2.31σ"),
    ("bollinger_lower_break", -2.05, 1, "-2.0σ"),
])
def test_statistic_text(rule, value, digits, text):
    assert statistic_text(rule, value, digits) == text
