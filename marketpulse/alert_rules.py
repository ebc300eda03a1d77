"""Every rule that can raise an alert, its label and how its statistic reads: the DataStream job's anomaly
rules (marketpulse.analytics.detector) and the Flink SQL job's indicator rules (sql/indicators.sql, view
indicator_alerts, which writes these names to the anomalies topic; docs/indicators.md "Alert rules").
The alert service and the dashboard's alert strip read both the same way."""

from __future__ import annotations

from marketpulse.analytics.detector import PRICE_JUMP, RULE_LABELS

RSI_OVERBOUGHT = "rsi_overbought"
RSI_OVERSOLD = "rsi_oversold"
BOLLINGER_UPPER_BREAK = "bollinger_upper_break"
BOLLINGER_LOWER_BREAK = "bollinger_lower_break"
INDICATOR_RULES = (RSI_OVERBOUGHT, RSI_OVERSOLD, BOLLINGER_UPPER_BREAK, BOLLINGER_LOWER_BREAK)
ALERT_RULE_LABELS = RULE_LABELS | {
    RSI_OVERBOUGHT: "RSI overbought", RSI_OVERSOLD: "RSI oversold",
    BOLLINGER_UPPER_BREAK: "close above the upper Bollinger band",
    BOLLINGER_LOWER_BREAK: "close below the lower Bollinger band",
}


def statistic_text(rule: str, value: float, digits: int = 2) -> str:
    """What fired, in words: '+3.45%' (price jump), 'RSI 72.4', '+2.31σ' (the close's distance from the
    SMA, in the Bollinger bands' standard deviations), else a z-score 'z +6.12'."""
    if rule == PRICE_JUMP:
        return f"{value:+.{digits}f}%"
    if rule in (RSI_OVERBOUGHT, RSI_OVERSOLD):
        return f"RSI {value:.1f}"
    if rule in (BOLLINGER_UPPER_BREAK, BOLLINGER_LOWER_BREAK):
        return f"{value:+.{digits}f}σ"
    return f"z {value:+.{digits}f}"
