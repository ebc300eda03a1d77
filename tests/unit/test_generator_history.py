"""History first, then live (--history-minutes, what `make demo` runs): event times of the history end at
"now", the live part continues the same price paths on the wall clock, and injected anomalies keep their
labels. Pure: the plan from options.resolve() with an injected "now", the run loop with a fake clock."""

import collections
import json
import math

import pytest

from generator.cli import build_parser
from generator.injections import ANOMALY_KINDS
from generator.options import UsageError, resolve
from generator.run import Pacer, Progress, run
from generator.sink import MemorySink
from marketpulse.config import load_settings

NOW_MS = 1_796_000_000_000
MINUTES = 10
SWITCH_S = MINUTES * 60


def plan_for(*args: str):
    settings = load_settings()
    parsed = build_parser(settings).parse_args(list(args))
    return resolve(parsed, settings, now_ms=lambda: NOW_MS)


def history_plan(*extra: str):
    return plan_for("--history-minutes", str(MINUTES), "--history-rate", "20", "--rate", "200",
                    "--duration", "30", *extra)


def trades_of(events):
    """(offset, trade dict) of every good trade, in emission order."""
    out = []
    for offset, _, _, messages in events:
        topic, _, value = messages[0]
        if topic == "trades":
            try:
                out.append((offset, json.loads(value)))
            except ValueError:  # a bad record
                pass
    return out


def test_history_event_times_end_at_now_and_live_ones_follow_on_every_symbol():
    plan = history_plan()
    assert plan.live_from_s == SWITCH_S and plan.wall_start_ms == NOW_MS - SWITCH_S * 1000
    assert plan.speed == 1.0  # the live part at 1 s of event time per wall second
    trades = trades_of(plan.events)
    history = [t for o, t in trades if o < SWITCH_S]
    live = [t for o, t in trades if o >= SWITCH_S]
    # 10 min at 20 trades/s of event time, then 30 s at 200/s (Poisson: within a few percent).
    assert len(history) == pytest.approx(12_000, rel=0.05) and len(live) == pytest.approx(6_000, rel=0.05)
    assert all(NOW_MS - SWITCH_S * 1000 <= t["event_time"] < NOW_MS for t in history)
    assert all(NOW_MS <= t["event_time"] < NOW_MS + 30_000 for t in live)
    assert max(t["event_time"] for t in history) > NOW_MS - 2_000  # no gap before now
    by_symbol = collections.defaultdict(list)
    for _, trade in trades:
        by_symbol[trade["symbol"]].append(trade["event_time"])
    assert len(by_symbol) == 10
    for times in by_symbol.values():  # no late fraction: emission order is event-time order per symbol
        assert times == sorted(times)


def test_prices_are_continuous_across_the_switch():
    trades = trades_of(history_plan().events)  # no anomalies: every price is the model's
    paths = collections.defaultdict(list)
    for offset, trade in trades:
        paths[trade["symbol"]].append((offset >= SWITCH_S, trade["price"]))
    for symbol, path in paths.items():
        steps = [abs(math.log(b / a)) for (_, a), (_, b) in zip(path, path[1:], strict=False)]
        switch = next(i for i, (live, _) in enumerate(path) if live)
        across = steps[switch - 1]
        within_history = max(steps[:switch - 1])
        # The first live price is one ordinary GBM step from the last history price (a fresh model would
        # restart at the symbol's start price, ~1 % away after ten minutes, far above any single step).
        assert across <= within_history, symbol
        assert across < 0.002, symbol


def test_the_history_is_a_prefix_of_the_same_stream_at_any_live_rate():
    # One stream: the history does not depend on the live part's rate or length, and the live part starts
    # from the history's last state, not from a second model.
    slow = trades_of(history_plan().events)
    fast = trades_of(plan_for("--history-minutes", str(MINUTES), "--history-rate", "20", "--rate", "50",
                              "--duration", "5").events)
    assert [t for o, t in slow if o < SWITCH_S] == [t for o, t in fast if o < SWITCH_S]


def test_anomalies_in_the_history_keep_their_labels():
    plan = history_plan("--anomaly-every", "97", "--late-fraction", "0.01", "--bad-fraction", "0.002")
    good, labels = {}, []
    for offset, _, _, messages in plan.events:
        topic, _, value = messages[0]
        try:
            trade = json.loads(value)
            good[trade["trade_id"]] = trade
        except ValueError:  # a malformed bad record
            pass
        labels += [(offset, json.loads(v)) for t, _, v in messages[1:] if t == "trades.injected"]
    anomalies = [lab for _, lab in labels if lab["kind"] in ANOMALY_KINDS]
    history = [lab for lab in anomalies if lab["event_time"] < NOW_MS]
    live = [lab for lab in anomalies if lab["event_time"] >= NOW_MS]
    assert len(history) > 50 and live  # ~12,000 history trades / 97
    for lab in history + live:
        trade = good[lab["trade_id"]]
        assert trade["event_time"] == lab["event_time"]
        if lab["kind"] == "volume_spike":
            assert trade["size"] == lab["size"]
        else:
            assert trade["price"] == lab["price"]
    kinds = collections.Counter(lab["kind"] for _, lab in labels)
    assert kinds["late"] and kinds["bad"]


class WallClock:
    """A fake monotonic clock; each sleep advances it."""

    def __init__(self):
        self.now = 5_000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_history_goes_out_at_once_and_the_live_part_on_the_wall_clock():
    plan = history_plan()
    clock = WallClock()
    started = clock.now
    # As run.execute() does: offset 0 is the history's first instant, SWITCH_S before "now" (= started).
    pacer = Pacer(plan.speed, clock=clock, sleep=clock.sleep, origin=started - SWITCH_S)
    sent = []

    class ClockedSink(MemorySink):
        def send(self, topic, key, value):
            if topic == "trades" and value.startswith(b'{"trade_id"'):
                sent.append((clock.now, json.loads(value)["event_time"]))

    lines = []
    stats = run(plan.events, ClockedSink(), trades_topic="trades", injected_topic="trades.injected",
                pacer=pacer, clock=clock, live_from_s=plan.live_from_s, announce=lines.append)
    history = [(at, t) for at, t in sent if t < NOW_MS]
    live = [(at, t) for at, t in sent if t >= NOW_MS]
    assert history and all(at == started for at, _ in history)  # no sleep before the last history trade
    for at, event_time in live:  # each live trade is sent when the wall clock reaches its event time
        assert at == pytest.approx(started + (event_time - NOW_MS) / 1000, abs=0.002)
    assert clock.now == pytest.approx(started + 30, abs=0.5)
    assert stats.trades == len(sent)
    assert len(lines) == 1 and lines[0].startswith(f"generator: history sent, {len(history):,} trades")


@pytest.mark.parametrize("args, message", [
    (("--clock", "sim"), "--clock sim"),
    (("--start-time", "2025-01-02T14:30:00Z"), "--start-time"),
    (("--event-rate", "100"), "--event-rate"),
    (("--rate", "0"), "live --rate above 0"),
    (("--history-rate", "0"), "--history-rate must be above 0"),
])
def test_history_rejects_options_that_contradict_it(args, message):
    with pytest.raises(UsageError, match=message):
        plan_for("--history-minutes", "5", *args)


def test_without_history_nothing_changes():
    plan = plan_for("--seed", "3", "--rate", "100", "--duration", "2")
    assert plan.live_from_s is None and plan.wall_start_ms is None


def test_make_demo_publishes_only_the_gap_since_the_windows_already_in_postgres():
    from datetime import UTC, datetime, timedelta

    from stack.demo import history_minutes

    now = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)
    assert history_minutes(60, None, now) == 60  # an empty database: the whole hour
    assert history_minutes(60, now - timedelta(days=2), now) == 60  # old data: the whole hour
    assert history_minutes(60, now - timedelta(minutes=12, seconds=30), now) == 12.5  # the gap only
    assert history_minutes(60, now + timedelta(seconds=5), now) == 0  # nothing to fill
    assert history_minutes(0, now - timedelta(days=2), now) == 0  # history off


def test_progress_says_history_instead_of_behind_schedule():
    line = Progress(5.0, clock=lambda: 10.0).line(1000, 0, 0, 0, lag_s=1800.0, history_left_s=600.0)
    assert line.endswith("(history: event time now-10.0 min)") and "behind schedule" not in line
