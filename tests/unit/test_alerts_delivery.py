"""alerts/payloads.py, alerts/channels.py (retries with a fake POST) and alerts/config.py."""

import json

import pytest

from alerts import payloads
from alerts.channels import ChannelResult, HttpChannel, Interrupted, LogChannel, post_json
from alerts.config import AlertConfig, redact
from alerts.policy import Anomaly
from marketpulse.config import ConfigError, load_settings

T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC
JUMP = Anomaly("t-42", "price_jump", "NVDA", T0 + 123, 487.5, 300, -3.75, None, None, T0 + 900)
ZSCORE = Anomaly("t-7", "price_zscore", "AAPL", T0, 187.25, 100, 6.125, 0.0001, 0.002, None)


def config(**overrides) -> AlertConfig:
    environ = {f"MARKETPULSE_ALERTS_{k.upper()}": str(v) for k, v in overrides.items()}
    settings = load_settings(environ=environ)
    return AlertConfig.from_settings(settings)


# --- payloads ------------------------------------------------------------------------------------

def test_webhook_payload_is_json_with_the_idempotency_id_and_both_time_forms():
    body = payloads.webhook_payload(JUMP)
    assert json.loads(json.dumps(body)) == body
    assert body["id"] == "t-42:price_jump" == JUMP.idempotency_key
    assert body["type"] == "marketpulse.anomaly" and body["version"] == 1
    assert body["event_time"] == "2023-11-14T22:13:20.123Z" and body["event_time_ms"] == T0 + 123
    assert body["detected_at"] == "2023-11-14T22:13:20.900Z"
    assert (body["symbol"], body["rule"], body["price"], body["size"], body["z_score"]) == (
        "NVDA", "price_jump", 487.5, 300, -3.75)
    assert body["mean"] is None and body["stddev"] is None
    assert body["text"] == "NVDA price jump -3.75% at 487.50 (size 300) at 2023-11-14 22:13:20.123 UTC"


def test_slack_payload_has_text_and_blocks():
    body = payloads.slack_payload(ZSCORE)
    assert body["text"].startswith(":rotating_light: AAPL price move z +6.12 at 187.25")
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "context"]
    assert body["blocks"][0]["text"] == {"type": "plain_text", "text": "AAPL: price move"}
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in body["blocks"][1]["fields"]}
    assert fields == {"*Symbol*": "AAPL", "*Rule*": "price_zscore", "*Price*": "187.25",
                      "*Statistic*": "z +6.12", "*Size*": "100",
                      "*Event time*": "2023-11-14 22:13:20.000 UTC"}
    assert "t-7" in body["blocks"][2]["elements"][0]["text"]


def test_log_line_is_one_readable_line_with_the_outcome():
    lines = []
    LogChannel(lines.append).deliver(JUMP, [ChannelResult("webhook", True, 2, 200),
                                            ChannelResult("slack", False, 3, 500, "HTTP 500 boom")])
    assert lines == ["ALERT NVDA price jump -3.75% at 487.50 (size 300) at 2023-11-14 22:13:20.123 UTC "
                     "[trade t-42] -> webhook ok (2 attempts); "
                     "slack FAILED after 3 attempt(s): HTTP 500 boom"]


def test_an_indicator_rule_reads_as_a_bar_close():
    rsi = Anomaly("AAPL@1700000010000", "rsi_overbought", "AAPL", T0, price=228.7, z_score=72.44, mean=70.0)
    assert payloads.summary(rsi) == "AAPL RSI overbought RSI 72.4 at 228.70 at 2023-11-14 22:13:20.000 UTC"


def test_unknown_rule_and_missing_values_still_render():
    odd = Anomaly("t", "new_rule", "X", T0)
    assert payloads.summary(odd) == "X new_rule — at — (size —) at 2023-11-14 22:13:20.000 UTC"
    assert payloads.webhook_payload(odd)["price"] is None


# --- HTTP channel with a fake POST ----------------------------------------------------------------

class FakePost:
    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.calls = []

    def __call__(self, url, body, headers, timeout):
        self.calls.append((url, body, headers, timeout))
        return self.outcomes.pop(0)


def channel(post, sleeps, **overrides):
    cfg = config(retries=3, backoff_initial_ms=100, backoff_multiplier=2, backoff_max_ms=250, **overrides)
    return HttpChannel("webhook", "http://hooks.example/x", payloads.webhook_payload, cfg, lambda _: None,
                       lambda s: sleeps.append(s) or True, post=post)


def test_retries_with_backoff_then_succeeds_with_the_same_idempotency_key():
    post = FakePost([(500, "HTTP 500", True), (None, "connection refused", True), (200, None, False)])
    sleeps = []
    result = channel(post, sleeps).deliver(JUMP)
    assert (result.ok, result.attempts, result.status) == (True, 3, 200)
    assert sleeps == [0.1, 0.2]
    assert {c[2]["Idempotency-Key"] for c in post.calls} == {"t-42:price_jump"}
    assert len({json.dumps(c[1]) for c in post.calls}) == 1


def test_gives_up_after_retries_with_the_last_reason_and_the_payload():
    post, sleeps = FakePost([(503, "HTTP 503 Service Unavailable", True)] * 4), []
    result = channel(post, sleeps).deliver(JUMP)
    assert (result.ok, result.attempts, result.error) == (False, 4, "HTTP 503 Service Unavailable")
    assert sleeps == [0.1, 0.2, 0.25]
    assert result.payload == payloads.webhook_payload(JUMP)
    assert result.as_json() == {"ok": False, "attempts": 4, "status": 503,
                                "error": "HTTP 503 Service Unavailable"}


def test_a_refusing_4xx_is_not_retried():
    post, sleeps = FakePost([(400, "HTTP 400 Bad Request", False)]), []
    result = channel(post, sleeps).deliver(JUMP)
    assert (result.ok, result.attempts, sleeps) == (False, 1, [])
    assert "not retried" in result.error


def test_stop_during_backoff_interrupts_without_a_result():
    cfg = config(retries=3, backoff_initial_ms=100)
    ch = HttpChannel("webhook", "http://h/x", payloads.webhook_payload, cfg, lambda _: None, lambda s: False,
                     post=FakePost([(500, "HTTP 500", True)] * 4))
    with pytest.raises(Interrupted):
        ch.deliver(JUMP)


def test_post_json_reports_connection_refused_as_retryable():
    import socket

    with socket.socket() as sock:  # a port that is free now and nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status, error, retryable = post_json(f"http://127.0.0.1:{port}/hook", {"a": 1}, {}, 2)
    assert (status, error, retryable) == (None, "connection refused", True)


# --- config --------------------------------------------------------------------------------------

def test_committed_config_needs_no_secret_and_runs_the_log_channel_only():
    cfg = AlertConfig.from_settings(load_settings(environ={}))
    assert cfg.webhook_url == "" and cfg.slack_webhook_url == ""
    assert cfg.active_channels() == ["log"]
    assert cfg.cooldown_ms == 60_000 and cfg.retries == 4
    assert cfg.max_age_ms == 60_000


def test_env_turns_channels_on_and_lists_are_comma_separated():
    cfg = config(webhook_url="https://hooks.example/abc", channels="webhook, log", cooldown_seconds="2.5")
    assert cfg.active_channels() == ["webhook", "log"]
    assert cfg.cooldown_ms == 2500
    assert cfg.inactive_notes() == []


@pytest.mark.parametrize("key, value, message", [
    ("channels", "log,pager", "unknown channel"),
    ("webhook_url", "ftp://x", "not an http"),
    ("retries", "-1", "out of range"),
    ("backoff_multiplier", "0.5", "out of range"),
    ("cooldown_seconds", "-3", "out of range"),
    ("max_age_seconds", "-1", "out of range"),
])
def test_bad_settings_are_one_line_errors(key, value, message):
    with pytest.raises(ConfigError, match=message):
        config(**{key: value})


def test_a_config_file_without_an_alerts_section_uses_the_defaults(tmp_path):
    (tmp_path / "p.toml").write_text('[kafka]\nanomalies_topic = "a"\n')
    cfg = AlertConfig.from_settings(load_settings(tmp_path / "p.toml", environ={}))
    assert cfg.channels == ("log", "webhook", "slack") and cfg.active_channels() == ["log"]


def test_logged_urls_hide_their_path():
    assert redact("https://hooks.slack.com/services/T000/B000/XXXX") == "https://hooks.slack.com/…"
    assert redact("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
