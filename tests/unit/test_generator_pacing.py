"""Pacing against an injected fake monotonic clock; the run loop's stopping, counting and progress."""

import io

import pytest

from generator.run import MAX_SLEEP_S, Pacer, Progress, run
from generator.sink import MemorySink


class FakeClock:
    def __init__(self, start=100.0):
        self.now = start
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def test_waits_until_each_event_is_due():
    clock = FakeClock()
    pacer = Pacer(1.0, clock=clock, sleep=clock.sleep)
    pacer.wait(0.1)
    assert clock.now == pytest.approx(100.1)
    pacer.wait(0.1)  # already due: no sleep
    assert clock.sleeps == [pytest.approx(0.1)]
    pacer.wait(1.0)
    assert clock.now == pytest.approx(101.0)
    assert all(s <= MAX_SLEEP_S for s in clock.sleeps)  # long waits are sliced


def test_no_drift_when_each_step_costs_time():
    # 10,000 events at 1,000/s with 0.3 ms of work per event: a sleep(1/N) loop would take 13 s;
    # scheduling against the clock finishes at 10 s exactly.
    clock = FakeClock(0.0)
    pacer = Pacer(1.0, clock=clock, sleep=clock.sleep)
    for i in range(1, 10_001):
        pacer.wait(i / 1000)
        clock.now += 0.0003
    assert clock.now == pytest.approx(10.0003, abs=1e-6)


def test_catches_up_after_a_stall_and_reports_the_lag():
    clock = FakeClock(0.0)
    pacer = Pacer(1.0, clock=clock, sleep=clock.sleep)
    pacer.wait(1.0)
    clock.now += 2.0  # a 2 s stall (GC, slow broker)
    for offset in (1.5, 2.0, 2.5):
        pacer.wait(offset)  # all overdue: emitted at once
    assert clock.now == pytest.approx(3.0)
    assert pacer.lag_s == pytest.approx(0.5)
    pacer.wait(4.0)
    assert clock.now == pytest.approx(4.0) and pacer.lag_s == 0


def test_speed_scales_the_schedule():
    clock = FakeClock(0.0)
    pacer = Pacer(10.0, clock=clock, sleep=clock.sleep)  # replay at 10x
    pacer.wait(60.0)
    assert clock.now == pytest.approx(6.0)
    with pytest.raises(ValueError):
        Pacer(0.0)


def test_a_stop_request_ends_a_long_wait_within_one_slice():
    clock = FakeClock(0.0)
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 2

    Pacer(1.0, clock=clock, sleep=clock.sleep, should_stop=should_stop).wait(3600.0)
    assert clock.now == pytest.approx(2 * MAX_SLEEP_S)


def _events(n, rate):
    return ((i / rate, 0, i, (("trades", b"AAPL", b"v%d" % i),)) for i in range(1, n + 1))


def test_run_paces_counts_and_stops_at_count():
    clock = FakeClock(0.0)
    sink = MemorySink()
    pacer = Pacer(1.0, clock=clock, sleep=clock.sleep)
    stats = run(_events(1000, 200.0), sink, trades_topic="trades", injected_topic="trades.injected",
                reference=[("symbols", b"AAPL", b"{}")], pacer=pacer, count=500, clock=clock)
    assert stats.trades == 500 and stats.reference == 1
    assert len(sink.messages) == 501
    assert clock.now == pytest.approx(2.5)  # 500 trades at 200/s
    assert stats.seconds == pytest.approx(2.5) and stats.rate == pytest.approx(200.0)


def test_run_counts_labels_and_bad_and_stops_on_request():
    events = [
        (0.0, 0, 1, (("trades", b"A", b"x"), ("inj", b"A", b'{"kind":"bad","trade_id":"A-1"}'))),
        (0.1, 0, 2, (("trades", b"A", b"y"), ("inj", b"A", b'{"kind":"late","trade_id":"A-2"}'))),
        (0.2, 0, 3, (("trades", b"A", b"z"),)),
    ]
    stops = iter([False, False, True])
    stats = run(events, MemorySink(), trades_topic="trades", injected_topic="inj",
                should_stop=lambda: next(stops))
    assert (stats.trades, stats.labels, stats.bad, stats.stopped_by_request) == (2, 2, 1, True)


def test_progress_line_with_and_without_total():
    clock = FakeClock(0.0)
    out = io.StringIO()
    progress = Progress(5.0, total=1000, stream=out, clock=clock)
    assert not progress.due()
    clock.now = 5.0
    assert progress.due()
    progress.emit(500, 3, 1, 0, 0.0)
    assert out.getvalue() == ("generator:    5.0s  [##########..........]  50% 500/1,000 trades  "
                              "100/s now, 100/s avg  labels 3  bad 1  delivery errors 0\n")
    clock.now = 10.0
    line = Progress(5.0, stream=out, clock=lambda: clock.now - 10.0 + 0.0).line(0, 0, 0, 2, 3.0)
    assert "0 trades" in line and "delivery errors 2" in line and "behind schedule by 3.0s" in line


def test_progress_lines_follow_wall_time_at_a_low_rate():
    # 5 trades/s for 21 s with a line every 5 s: lines at 5, 10, 15 and 20 s (and none between), not one
    # per 256 trades (the first would come after 51 s).
    clock = FakeClock(0.0)
    out = io.StringIO()
    progress = Progress(5.0, stream=out, clock=clock)
    pacer = Pacer(1.0, clock=clock, sleep=clock.sleep)
    stats = run(_events(105, 5.0), MemorySink(), trades_topic="trades", injected_topic="trades.injected",
                pacer=pacer, progress=progress, clock=clock)
    assert stats.trades == 105
    assert out.getvalue().splitlines() == [
        f"generator: {seconds:6.1f}s  {5 * seconds} trades  5/s now, 5/s avg  labels 0  bad 0  "
        "delivery errors 0"
        for seconds in (5, 10, 15, 20)]
