"""marketpulse.analytics.scoring on detections and labels worked out by hand."""

import pytest

from marketpulse.analytics.scoring import ANY, score

LABELS = [
    {"kind": "price_spike", "trade_id": "s1", "event_time": 1000},
    {"kind": "price_spike", "trade_id": "s2", "event_time": 2000},
    {"kind": "price_crash", "trade_id": "c1", "event_time": 3000},
    {"kind": "volume_spike", "trade_id": "v1", "event_time": 4000},
    {"kind": "volume_spike", "trade_id": "v2", "event_time": 5000},
    {"kind": "late", "trade_id": "l1", "event_time": 6000},  # not an anomaly: never a true detection
    {"kind": "bad", "trade_id": "b1", "event_time": 7000},
]
DETECTIONS = [
    ("s1", "price_zscore", 1000, 1100),
    ("s1", "price_jump", 1000, 1300),
    ("c1", "price_zscore", 3000, 3500),
    ("q1", "price_zscore", 8000, 8050),  # an ordinary trade: a false alarm
    ("v1", "volume_zscore", 4000, None),  # no detected_at (an offline run): no delay
    ("l1", "volume_zscore", 6000, 6200),  # a late trade is no volume anomaly
    ("v1", "price_zscore", 4000, 4100),  # a volume anomaly flagged by a price rule: not the rule's kind
]


def test_precision_recall_f1_and_delay_per_rule():
    table = score(DETECTIONS, LABELS)
    zscore = table.rules["price_zscore"]
    assert (zscore.detections, zscore.true_detections) == (4, 2)
    assert zscore.precision == 0.5
    assert zscore.recall == {"price_spike": 0.5, "price_crash": 1.0}
    assert zscore.overall_recall == pytest.approx(2 / 3)
    assert zscore.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert zscore.median_delay_ms == 300  # of s1 (100) and c1 (500)

    jump = table.rules["price_jump"]
    assert (jump.detections, jump.precision) == (1, 1.0)
    assert jump.recall == {"price_spike": 0.5, "price_crash": 0.0}
    assert jump.median_delay_ms == 300

    volume = table.rules["volume_zscore"]
    assert (volume.detections, volume.precision, volume.recall) == (2, 0.5, {"volume_spike": 0.5})
    assert volume.median_delay_ms is None


def test_the_any_row_counts_trades_and_their_first_detection():
    flagged = score(DETECTIONS, LABELS).rules[ANY]
    # s1, c1, q1, v1, l1: five trades; s1, c1 and v1 carry an anomaly label.
    assert (flagged.detections, flagged.true_detections) == (5, 3)
    assert flagged.recall == {"price_spike": 0.5, "price_crash": 1.0, "volume_spike": 0.5}
    assert flagged.median_delay_ms == 100  # s1 at its first detection (100), c1 500, v1 100


def test_no_labels_and_no_detections_give_empty_figures_not_errors():
    table = score([], [])
    assert table.rules["price_zscore"].precision is None
    assert table.rules["price_zscore"].recall == {"price_spike": None, "price_crash": None}
    assert table.rules["price_zscore"].f1 is None
    assert "labels: price_spike 0" in table.render()
    with pytest.raises(ValueError, match="unknown rule"):
        score([("t", "bogus", 0, None)], [])


def test_render_shows_one_row_per_rule():
    text = score(DETECTIONS, LABELS).render().splitlines()
    assert [line.split()[0] for line in text[1:-1]] == ["price_zscore", "price_jump", "volume_zscore", ANY]
    assert text[1].split()[1:6] == ["4", "0.500", "0.667", "0.571", "300"]
