"""alerts/policy.py: parsing the anomalies topic's records, dedup, cooldown edges, replay, backoff."""

import json
import random

import pytest

from alerts.policy import (
    ALERT,
    REPEAT,
    STALE,
    SUPPRESS,
    Anchor,
    Anomaly,
    CooldownPolicy,
    InvalidAnomaly,
    backoff_delays,
    decide_stream,
    parse_anomaly,
)

T0 = 1_700_000_000_000


def anomaly(trade_id: str, t_ms: int, symbol: str = "AAPL", rule: str = "price_jump") -> Anomaly:
    return Anomaly(trade_id=trade_id, rule=rule, symbol=symbol, event_time=T0 + t_ms, price=100.0, size=10)


def actions(stream, cooldown_ms, **kwargs):
    return [verdict.action for _, verdict in decide_stream(stream, cooldown_ms, **kwargs)]


# --- parsing -------------------------------------------------------------------------------------

def test_parses_what_the_datastream_job_writes():
    # jobs/market_metrics_sinks.sql, anomalies_kafka: 'value.fields-include' = 'ALL', epoch-ms times.
    value = json.dumps({"symbol": "AAPL", "trade_id": "t-1", "rule": "price_zscore", "event_time": T0,
                        "price": 187.5, "size": 120, "z_score": -6.25, "mean": 0.0001, "stddev": 0.002,
                        "detected_at": T0 + 40}).encode()
    a = parse_anomaly(value)
    assert a == Anomaly("t-1", "price_zscore", "AAPL", T0, 187.5, 120, -6.25, 0.0001, 0.002, T0 + 40)
    assert a.key == ("t-1", "price_zscore")
    assert a.idempotency_key == "t-1:price_zscore"


def test_price_jump_has_null_mean_and_stddev():
    value = json.dumps({"symbol": "MSFT", "trade_id": "x", "rule": "price_jump", "event_time": T0,
                        "price": 10, "size": 1, "z_score": 3.2, "mean": None, "stddev": None,
                        "detected_at": None})
    a = parse_anomaly(value)
    assert (a.price, a.mean, a.stddev, a.detected_at) == (10.0, None, None, None)


@pytest.mark.parametrize("value, reason", [
    (None, "tombstone"),
    (b"\xff\xfe", "not JSON"),
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"rule": "r", "symbol": "S", "event_time": 1}', "missing trade_id"),
    (b'{"trade_id": "t", "rule": "r", "symbol": "S"}', "missing event_time"),
    (b'{"trade_id": "t", "rule": "r", "symbol": "S", "event_time": "2024-01-01"}', "event_time"),
    (b'{"trade_id": "t", "rule": "r", "symbol": "S", "event_time": 1.5}', "event_time"),
    (b'{"trade_id": 7, "rule": "r", "symbol": "S", "event_time": 1}', "trade_id is not a string"),
    (b'{"trade_id": "t", "rule": "r", "symbol": "S", "event_time": 1, "price": "1"}', "price"),
    (b'{"trade_id": "t", "rule": "r", "symbol": "S", "event_time": 1, "price": NaN}', "price"),
    (b'{"trade_id": "t", "rule": "r", "symbol": "S", "event_time": 1, "size": 1.5}', "size"),
])
def test_rejects_what_is_not_an_anomaly_with_one_printable_line(value, reason):
    with pytest.raises(InvalidAnomaly, match=reason) as err:
        parse_anomaly(value)
    assert "\n" not in str(err.value)


# --- dedup ---------------------------------------------------------------------------------------

def test_a_repeated_message_is_never_decided_twice():
    first = anomaly("t1", 0)
    assert actions([first, first, anomaly("t1", 0)], 60_000) == [ALERT, REPEAT, REPEAT]


def test_same_trade_other_rule_is_another_anomaly():
    stream = [anomaly("t1", 0, rule="price_jump"), anomaly("t1", 0, rule="price_zscore")]
    assert actions(stream, 60_000) == [ALERT, ALERT]


def test_a_repeat_of_a_suppressed_anomaly_stays_a_repeat_and_does_not_move_the_cooldown():
    policy = CooldownPolicy(10_000)
    stream = [anomaly("a", 0), anomaly("b", 5_000), anomaly("b", 5_000), anomaly("c", 10_000)]
    assert actions(stream, 10_000, policy=policy) == [ALERT, SUPPRESS, REPEAT, ALERT]
    assert policy.anchors[("AAPL", "price_jump")] == Anchor(T0 + 10_000, "c")


def test_already_decided_comes_from_the_caller():
    verdict = CooldownPolicy(0).decide(anomaly("t", 0), already_decided=True)
    assert verdict.action == REPEAT and "already decided" in verdict.reason


# --- cooldown ------------------------------------------------------------------------------------

def test_cooldown_edges_in_event_time():
    stream = [anomaly("a", 0), anomaly("b", 1), anomaly("c", 59_999), anomaly("d", 60_000),
              anomaly("e", 60_001), anomaly("f", 119_999), anomaly("g", 120_000)]
    assert actions(stream, 60_000) == [ALERT, SUPPRESS, SUPPRESS, ALERT, SUPPRESS, SUPPRESS, ALERT]


def test_cooldown_counts_from_the_last_alert_not_the_last_anomaly():
    # A steady trickle every 30 s: one alert per 60 s, never a permanent mute.
    stream = [anomaly(f"t{i}", i * 30_000) for i in range(7)]
    assert actions(stream, 60_000) == [ALERT, SUPPRESS, ALERT, SUPPRESS, ALERT, SUPPRESS, ALERT]


def test_cooldown_is_per_symbol_and_rule():
    stream = [anomaly("a", 0), anomaly("b", 1, symbol="MSFT"), anomaly("c", 2, rule="volume_zscore"),
              anomaly("d", 3)]
    assert actions(stream, 60_000) == [ALERT, ALERT, ALERT, SUPPRESS]


def test_an_older_anomaly_after_an_alert_is_suppressed_with_its_reason():
    results = list(decide_stream([anomaly("new", 100_000), anomaly("old", 0)], 60_000))
    assert [v.action for _, v in results] == [ALERT, SUPPRESS]
    assert "older than the last alert new" in results[1][1].reason


def test_suppression_reason_names_the_alert_and_the_gap():
    results = list(decide_stream([anomaly("a", 0), anomaly("b", 12_500)], 60_000))
    assert results[1][1].reason == "cooldown: 12.5 s after alert a (cooldown 60 s)"


def test_cooldown_zero_alerts_every_distinct_anomaly():
    stream = [anomaly("a", 5), anomaly("b", 5), anomaly("c", 0), anomaly("a", 5)]
    assert actions(stream, 0) == [ALERT, ALERT, ALERT, REPEAT]


def test_negative_cooldown_is_refused():
    with pytest.raises(ValueError):
        CooldownPolicy(-1)


def test_anomalies_older_than_the_max_age_are_stale_and_start_no_cooldown():
    # make demo: the hour of history reaches the service seconds after the start; only the live part (and
    # the last minute of history) is news. Ages are measured against the wall clock passed in.
    policy = CooldownPolicy(60_000, max_age_ms=60_000)
    now = T0 + 3_600_000
    history = [anomaly("h1", 0), anomaly("h2", 1_000), anomaly("h3", 120_000, rule="price_zscore")]
    live = [anomaly("l1", 3_599_000), anomaly("l2", 3_599_500)]
    verdicts = [v for _, v in decide_stream(history + live, 60_000, policy=policy, now_ms=now)]
    assert [v.action for v in verdicts] == [STALE, STALE, STALE, ALERT, SUPPRESS]
    assert verdicts[0].reason == "stale: event time 3,600 s before it was read (max age 60 s)"
    assert policy.anchors == {("AAPL", "price_jump"): Anchor(T0 + 3_599_000, "l1")}


def test_max_age_edges_and_off():
    edge = [anomaly("a", 0), anomaly("b", -1, symbol="MSFT")]
    assert actions(edge, 0, policy=CooldownPolicy(0, max_age_ms=60_000), now_ms=T0 + 60_000) == [ALERT, STALE]
    old = [anomaly("a", 0)]
    assert actions(old, 0, policy=CooldownPolicy(0, max_age_ms=0), now_ms=T0 + 10**9) == [ALERT]  # 0 = off
    assert actions(old, 0, policy=CooldownPolicy(0, max_age_ms=1)) == [ALERT]  # no clock: no age check
    with pytest.raises(ValueError):
        CooldownPolicy(0, max_age_ms=-1)


def test_a_repeat_stays_a_repeat_whatever_its_age():
    policy = CooldownPolicy(0, max_age_ms=1_000)
    assert policy.decide(anomaly("a", 0), already_decided=True, now_ms=T0 + 10**9).action == REPEAT


def test_anchors_loaded_after_a_restart_continue_the_cooldown():
    policy = CooldownPolicy(60_000, {("AAPL", "price_jump"): Anchor(T0, "before-restart")})
    assert actions([anomaly("x", 30_000), anomaly("y", 60_000)], 60_000, policy=policy) == [SUPPRESS, ALERT]


# --- replay and restart ---------------------------------------------------------------------------

def seeded_stream(seed: int, n: int = 400) -> list[Anomaly]:
    """Anomalies of 3 symbols x 2 rules with random gaps, some out of order, then at-least-once repeats."""
    rng = random.Random(seed)
    t, stream = 0, []
    for i in range(n):
        t += rng.randint(0, 20_000)
        jitter = -rng.randint(0, 5_000) if rng.random() < 0.1 else 0
        stream.append(anomaly(f"t{i}", t + jitter, symbol=rng.choice("ABC"), rule=rng.choice(["r1", "r2"])))
    repeats = [stream[i] for i in rng.sample(range(n), n // 10)]
    return stream + repeats


def test_replay_of_the_whole_stream_decides_nothing_new():
    stream = seeded_stream(1)
    policy, decided = CooldownPolicy(60_000), set()
    first = list(decide_stream(stream, 60_000, policy=policy, decided=decided))
    again = list(decide_stream(stream, 60_000, policy=policy, decided=decided))
    assert sum(v.action == ALERT for _, v in first) > 10
    assert {v.action for _, v in again} == {REPEAT}


def test_restart_mid_stream_with_a_rewind_makes_the_same_decisions():
    """What the service does: decisions stored per anomaly, offsets committed later, so a restart re-reads
    a tail it already decided. The decisions equal those of one uninterrupted run."""
    stream = seeded_stream(2)
    uninterrupted = {a.key: v.action for a, v in decide_stream(stream, 45_000) if v.action != REPEAT}

    stored: dict = {}
    policy = CooldownPolicy(45_000)
    for a, v in decide_stream(stream[:250], 45_000, policy=policy, decided=set()):
        if v.action != REPEAT:
            stored[a.key] = v.action
    # Restart: anchors as the store loads them (latest alert per group), re-read from offset 200.
    anchors = {}
    for a in stream[:250]:
        if stored.get(a.key) == ALERT:
            group = (a.symbol, a.rule)
            if group not in anchors or a.event_time > anchors[group].event_time:
                anchors[group] = Anchor(a.event_time, a.trade_id)
    policy = CooldownPolicy(45_000, anchors)
    for a, v in decide_stream(stream[200:], 45_000, policy=policy, decided=set(stored)):
        if v.action != REPEAT:
            stored[a.key] = v.action
    assert stored == uninterrupted


# --- backoff -------------------------------------------------------------------------------------

def test_backoff_schedule_doubles_up_to_the_cap():
    assert backoff_delays(6, 500, 2.0, 10_000) == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert backoff_delays(3, 100, 3, 10_000) == [0.1, 0.3, pytest.approx(0.9)]
    assert backoff_delays(0, 500, 2.0, 10_000) == []
    assert backoff_delays(2, 0, 2.0, 0) == [0.0, 0.0]


@pytest.mark.parametrize("args", [(-1, 500, 2, 1000), (1, -5, 2, 1000), (1, 500, 0.5, 1000), (1, 5, 2, -1)])
def test_backoff_refuses_nonsense(args):
    with pytest.raises(ValueError):
        backoff_delays(*args)
