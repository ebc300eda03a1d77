"""What each channel sends for an alert, pure: the webhook's JSON, a Slack incoming-webhook message and the
log line. Times are UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from alerts.policy import Anomaly
from marketpulse.alert_rules import ALERT_RULE_LABELS, INDICATOR_RULES
from marketpulse.alert_rules import statistic_text as rule_statistic_text

PAYLOAD_TYPE = "marketpulse.anomaly"
PAYLOAD_VERSION = 1


def iso_time(epoch_ms: int | None) -> str | None:
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _time_text(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def statistic_text(anomaly: Anomaly) -> str:
    """What fired, in words: 'z +6.12', '+3.45%', 'RSI 72.4' (marketpulse.alert_rules)."""
    if anomaly.z_score is None:
        return "—"
    return rule_statistic_text(anomaly.rule, anomaly.z_score)


def summary(anomaly: Anomaly) -> str:
    """One line a person reads: 'AAPL price jump +3.45% at 187.23 (size 120) at 2024-... UTC'."""
    title = ALERT_RULE_LABELS.get(anomaly.rule, anomaly.rule)
    # An indicator rule is about a bar (its close, its end), not one trade: it has no size.
    size = "" if anomaly.rule in INDICATOR_RULES else f" (size {_num(anomaly.size, 0)})"
    return (f"{anomaly.symbol} {title} {statistic_text(anomaly)} at {_num(anomaly.price, 2)}{size} "
            f"at {_time_text(anomaly.event_time)}")


def webhook_payload(anomaly: Anomaly) -> dict:
    """The JSON body of the generic webhook. `id` equals the Idempotency-Key header."""
    return {
        "type": PAYLOAD_TYPE,
        "version": PAYLOAD_VERSION,
        "id": anomaly.idempotency_key,
        "trade_id": anomaly.trade_id,
        "rule": anomaly.rule,
        "symbol": anomaly.symbol,
        "event_time": iso_time(anomaly.event_time),
        "event_time_ms": anomaly.event_time,
        "price": anomaly.price,
        "size": anomaly.size,
        "z_score": anomaly.z_score,
        "mean": anomaly.mean,
        "stddev": anomaly.stddev,
        "detected_at": iso_time(anomaly.detected_at),
        "text": summary(anomaly),
    }


def slack_payload(anomaly: Anomaly) -> dict:
    """A Slack incoming-webhook message: `text` (the notification and fallback) plus Block Kit blocks.
    Anything that accepts Slack's format (Mattermost, Rocket.Chat, Discord's /slack endpoint) reads it."""
    title = ALERT_RULE_LABELS.get(anomaly.rule, anomaly.rule)
    fields = [
        ("Symbol", anomaly.symbol), ("Rule", anomaly.rule), ("Price", _num(anomaly.price, 2)),
        ("Statistic", statistic_text(anomaly)), ("Size", _num(anomaly.size, 0)),
        ("Event time", _time_text(anomaly.event_time)),
    ]
    return {
        "text": f":rotating_light: {summary(anomaly)}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": f"{anomaly.symbol}: {title}"}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{value}"}
                                           for name, value in fields]},
            {"type": "context", "elements": [{"type": "mrkdwn",
                                              "text": f"MarketPulse · trade `{anomaly.trade_id}`"}]},
        ],
    }


def log_line(anomaly: Anomaly) -> str:
    return f"ALERT {summary(anomaly)} [trade {anomaly.trade_id}]"
