"""Watermark heartbeats: the record (marketpulse/trade.py) and the generator's rounds (generator/heartbeat.py,
the pacer's wait in generator/run.py)."""

from __future__ import annotations

import pytest

from generator.heartbeat import Heartbeats
from generator.run import Pacer
from marketpulse.trade import MAX_EVENT_TIME_MS, InvalidTrade, heartbeat_time, heartbeat_value, parse_trade


def test_a_heartbeat_is_exactly_its_text_and_round_trips():
    assert heartbeat_value(1_735_828_200_000) == b'{"heartbeat":1735828200000}'
    for event_time in (0, 1, 1_735_828_200_000, MAX_EVENT_TIME_MS):
        assert heartbeat_time(heartbeat_value(event_time)) == event_time
    with pytest.raises(ValueError):
        heartbeat_value(MAX_EVENT_TIME_MS + 1)
    with pytest.raises(ValueError):
        heartbeat_value(-1)


@pytest.mark.parametrize("value", [
    None, b"", b'{"heartbeat":5}\n', b' {"heartbeat":5}', b'{"heartbeat": 5}', b'{"heartbeat":05}',
    b'{"heartbeat":-5}', b'{"heartbeat":"5"}', b'{"heartbeat":5.0}', b'{"heartbeat":5,"x":1}',
    b'{"Heartbeat":5}', b'{"heartbeat":253402214400000}', b'{"heartbeat":1' + b"0" * 40 + b"}",
    b'{"trade_id":"t1","symbol":"AAPL","price":1.0,"size":1,"side":"BUY","event_time":5}',
])
def test_anything_else_is_not_a_heartbeat(value):
    assert heartbeat_time(value) is None


def test_a_heartbeat_is_not_a_trade():
    """So the DataStream job must recognise it before parse_trade, or it would be a dead letter."""
    with pytest.raises(InvalidTrade):
        parse_trade(heartbeat_value(5))


def test_a_round_goes_to_every_partition_once_per_interval_with_the_clock_s_event_time():
    sent = []
    beats = Heartbeats(lambda partition, value: sent.append((partition, value)), [2, 0, 1], 1.0,
                       event_time_ms=lambda now: 1_000_000 + int(now * 1000))
    for now in (10.0, 10.25, 10.5, 10.99):
        beats.tick(now)
    assert sent == [(p, heartbeat_value(1_010_000)) for p in (0, 1, 2)]
    beats.tick(11.0)
    assert sent[3:] == [(p, heartbeat_value(1_011_000)) for p in (0, 1, 2)]
    assert beats.sent == 6


def test_the_pacer_beats_only_while_it_waits_that_is_when_every_due_event_is_out():
    """A heartbeat promises its partition's trades up to its time: a pacer that is behind (the history, a
    burst) sends events without waiting, and no heartbeat goes out between them."""
    clock = [100.0]
    waited_at = []

    def sleep(seconds):
        clock[0] += seconds

    pacer = Pacer(1.0, clock=lambda: clock[0], sleep=sleep, origin=100.0, while_waiting=waited_at.append)
    clock[0] = 105.0  # five seconds behind: the events at offsets 1..4 are overdue
    for offset in (1.0, 2.0, 3.0, 4.0):
        pacer.wait(offset)
    assert waited_at == []
    pacer.wait(5.6)  # due in 0.6 s: waits in slices of at most 0.25 s
    assert waited_at == [105.0, 105.25, 105.5]
    assert clock[0] == pytest.approx(105.6)
