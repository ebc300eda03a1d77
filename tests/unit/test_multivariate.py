"""marketpulse.analytics.multivariate against tests/reference.py's independent recomputation, on windows
worked out by hand and on a seeded generator stream with volume surges; its state through a pickle round
trip."""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import asdict, replace

import pytest

from generator.injections import SURGE_KIND, SurgeOptions
from generator.model import build_universe
from generator.stream import StreamOptions, generate
from marketpulse.analytics import AnomalyDetector, DetectorConfig, WindowMetrics, aggregate_windows
from marketpulse.analytics.multivariate import FEATURES, MultivariateConfig, WindowModel, window_features
from marketpulse.analytics.scoring import score
from marketpulse.flink.book import WindowModelSlot
from marketpulse.trade import InvalidTrade, parse_trade
from tests.reference import reference_window_scores

CONFIG = MultivariateConfig(history=60, warmup=10, threshold=30.0, top_features=3, tick_size=0.01, relearn=5)
START_MS = 1_735_828_200_000  # a multiple of 60 s
SYMBOLS = ["AAPL", "MSFT", "TSLA", "V"]


def window(minute: int, *, open_=100.0, close=100.0, high=100.2, low=99.8, vwap=100.0, volume=10_000,
           trades=100, buys=50) -> WindowMetrics:
    start = START_MS + minute * 60_000
    return WindowMetrics("AAPL", 60, start, start + 60_000, open_, high, low, close, vwap, volume,
                         vwap * volume, trades, buys, trades - buys, low, high, (open_ + close) / 2, 0.1)


def test_features_of_a_window_worked_out_by_hand():
    features = dict(zip(FEATURES, window_features(window(0, open_=100.0, close=101.0, high=102.0, low=99.0,
                                                         vwap=100.5, volume=5000, trades=40, buys=30)),
                        strict=True))
    assert features == pytest.approx({
        "return": math.log(1.01), "range": math.log(102 / 99), "volume": math.log(5000),
        "trades": math.log(40), "imbalance": (30 - 10) / 40, "vwap_dev": math.log(101 / 100.5)})


def test_warm_up_then_a_surge_window_scores_on_volume_and_imbalance():
    config = replace(CONFIG, warmup=4)
    model = WindowModel(config)
    # Four ordinary windows: no score until the baseline holds `warmup` of them.
    ordinary = [window(0, volume=10_000, buys=50), window(1, volume=11_000, buys=45, close=100.1),
                window(2, volume=9_000, buys=55, close=99.9), window(3, volume=10_500, buys=52)]
    assert [model.push(w) for w in ordinary] == [None] * 4
    surge = window(4, volume=30_000, buys=90)
    scored = model.push(surge)
    [expected] = reference_window_scores([asdict(w) for w in [*ordinary, surge]], history=60, warmup=4,
                                         threshold=30.0, tick_size=0.01)[-1:]
    assert scored.score == pytest.approx(expected["score"], rel=1e-12)
    assert scored.anomalous and scored.score > 30
    assert [name for name, _z in scored.top] == list(expected["z"])[:3]
    assert {"volume", "imbalance"} == {name for name, _z in scored.top[:2]}
    assert scored.top_features.startswith(f"{scored.top[0][0]} +")
    # An ordinary window after it is quiet again.
    assert not model.push(window(5, volume=10_200, buys=49)).anomalous


def seeded(minutes: float, surge_rate: float, rate: float = 12.0, seed: int = 7):
    """Trades and labels of a seeded generator stream of SYMBOLS with volume surges."""
    options = StreamOptions(universe=build_universe(SYMBOLS, seed), seed=seed, start_ms=START_MS,
                            event_rate=rate, run="mv", end_offset_s=minutes * 60,
                            surges=SurgeOptions(rate=surge_rate))
    trades, labels = [], []
    for _offset, _index, _n, ((_topic, _key, value), *label_messages) in generate(options):
        labels.extend(json.loads(label) for _t, _k, label in label_messages)
        try:
            trades.append(parse_trade(value))
        except InvalidTrade:
            continue
    return trades, labels


@pytest.fixture(scope="module")
def stream():
    # 90 event-time minutes of 4 symbols at 12 trades/s (~65,000 trades), 3 surges per symbol-hour.
    return seeded(90, 3.0)


def model_rows(windows: list[WindowMetrics]) -> list:
    rows = []
    for symbol in SYMBOLS:
        model = WindowModel(CONFIG)
        rows += [scored for w in windows if w.symbol == symbol if (scored := model.push(w)) is not None]
    return rows


def test_scores_equal_the_reference_on_a_seeded_stream(stream):
    trades, _labels = stream
    windows = aggregate_windows(trades, 60)
    rows = model_rows(windows)
    expected = []
    for symbol in SYMBOLS:
        expected += reference_window_scores([asdict(w) for w in windows if w.symbol == symbol],
                                            history=CONFIG.history, warmup=CONFIG.warmup,
                                            threshold=CONFIG.threshold, tick_size=CONFIG.tick_size)
    assert len(rows) == len(expected) == len(windows) - CONFIG.warmup * len(SYMBOLS)
    for got, want in zip(rows, expected, strict=True):
        assert (got.symbol, got.window_start, got.window_end, got.anomalous) == \
            (want["symbol"], want["window_start"], want["window_end"], want["anomalous"])
        assert got.score == pytest.approx(want["score"], rel=1e-9)
        assert [name for name, _ in got.top] == list(want["z"])
        assert [z for _, z in got.top] == pytest.approx(list(want["z"].values()), rel=1e-9)


def test_it_catches_the_surges_that_the_trade_rules_miss(stream):
    trades, labels = stream
    rows = model_rows(aggregate_windows(trades, 60))
    flagged = [(row.symbol, row.window_start, row.window_end) for row in rows if row.anomalous]
    warm = START_MS + (CONFIG.warmup + 1) * 60_000  # every symbol trades each minute: warm from here
    detector = DetectorConfig(lookback=100, warmup=30, z_threshold=5.0, price_jump_pct=3.0,
                              volume_z_threshold=5.0)
    detectors = {symbol: AnomalyDetector(detector) for symbol in SYMBOLS}
    detections = [(a.trade_id, a.rule, a.event_time, None) for trade in trades
                  for a in detectors[trade.symbol].push(trade)]
    table = score(detections, [label for label in labels if label["event_time"] >= warm], flagged)
    assert table.labels[SURGE_KIND] == 15  # episodes after warm-up
    multivariate = table.rules["multivariate"]
    assert multivariate.recall[SURGE_KIND] == 1.0
    print(table.render())
    assert (multivariate.detections, multivariate.true_detections) == (25, 23)
    # No trade rule flags a single trade of any surge: no trade of one is extreme, and the price stays on
    # the model's path.
    rules = ("price_zscore", "price_jump", "volume_zscore")
    assert [table.rules[rule].recall[SURGE_KIND] for rule in rules] == [0.0, 0.0, 0.0]


def test_quiet_stream_few_false_alarms():
    trades, _labels = seeded(120, 0.0, seed=11)
    rows = model_rows(aggregate_windows(trades, 60))
    # 4 symbols x 2 h = 8 symbol-hours, 440 scored windows: none above the threshold (the highest 25.9).
    assert len(rows) == 440
    assert max(row.score for row in rows) == pytest.approx(25.9, abs=0.05)
    assert not any(row.anomalous for row in rows)


def test_state_round_trip_gives_identical_scores(stream):
    trades, _labels = stream
    windows = [w for w in aggregate_windows(trades, 60) if w.symbol == "TSLA"]
    straight = WindowModel(CONFIG)
    expected = [straight.push(w) for w in windows]
    model = WindowModel(CONFIG)
    got = []
    for w in windows:
        # As the job keeps it: a slot pickled to bytes and back around every window.
        slot = WindowModelSlot.from_state(CONFIG, pickle.loads(pickle.dumps(WindowModelSlot(model))))
        model = slot.model
        got.append(model.push(w))
    assert got == expected
    state = pickle.dumps(WindowModelSlot(model))
    assert len(state) < 6_000  # the checkpointed size per symbol: 60 windows x 6 floats


def test_slot_scores_only_the_scored_size_and_config_is_checked():
    slot = WindowModelSlot(WindowModel(replace(CONFIG, warmup=3)))
    short = [replace(window(minute), window_seconds=10, window_end=window(minute).window_start + 10_000)
             for minute in range(5)]
    assert slot.score(short, 60_000) == [] and len(slot.model.baseline) == 0
    assert len(slot.score([window(minute) for minute in range(5)], 60_000)) == 2
    with pytest.raises(ValueError, match="warmup"):
        replace(CONFIG, warmup=2)
    with pytest.raises(ValueError, match="version"):
        WindowModel.from_state(CONFIG, (99, ()))


def test_a_lasting_change_is_relearnt_after_relearn_anomalous_windows():
    """Trading jumps to 10 times the volume and trades for good: `relearn` anomalous windows, then the
    baseline is those windows and warms up again, then the new level is ordinary; as the reference does it."""
    config = replace(CONFIG, warmup=4, relearn=2)
    before = [window(minute, volume=10_000 + 100 * (minute % 3), trades=100 + minute % 2,
                     buys=50 - minute % 3) for minute in range(6)]
    after = [window(minute, volume=100_000 + 1000 * (minute % 3), trades=1000 + minute % 4,
                    buys=500 + minute % 5) for minute in range(6, 14)]
    model = WindowModel(config)
    rows = [model.push(w) for w in [*before, *after]]
    shape = [None if row is None else row.anomalous for row in rows]
    # 4 warm-up, 2 ordinary, 2 anomalous (relearn), 2 warming up again on the new level, then ordinary.
    assert shape == [None] * 4 + [False, False, True, True, None, None, False, False, False, False]
    expected = reference_window_scores([asdict(w) for w in [*before, *after]], history=60, warmup=4,
                                       threshold=30.0, tick_size=0.01, relearn=2)
    assert [row.score for row in rows if row is not None] == pytest.approx([e["score"] for e in expected])
