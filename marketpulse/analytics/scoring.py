"""Detection quality: the detector's anomalies against the generator's ground truth (the trades.injected
labels), per rule and per injected kind. Pure: `python -m marketpulse.score` feeds it from PostgreSQL and
Kafka, bench/detection.py from an offline run, and the tests assert their thresholds through it.

    table = score(detections, labels)
    table.rules["price_zscore"].precision, table.rules["price_zscore"].recall["price_spike"]
    print(table.render())

A detection is (trade_id, rule, event_time, detected_at or None); a label is the injected record's dict
({"kind", "trade_id", "event_time", ...}, generator/injections.py). A rule is scored on the kinds it is
meant for (RULE_TARGETS): precision = its detections on a trade labelled with one of them / all its
detections; recall[kind] = labels of that kind it caught / labels of that kind; F1 from the precision and
the recall over all its kinds together; delay = median detected_at - event_time of its true detections.
The row "any" counts trades, not rows: flagged by any rule, precision against any anomaly label.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from marketpulse.analytics.detector import PRICE_JUMP, PRICE_ZSCORE, RULES, VOLUME_ZSCORE

PRICE_KINDS = ("price_spike", "price_crash")
VOLUME_KINDS = ("volume_spike",)
ANOMALY_KINDS = PRICE_KINDS + VOLUME_KINDS  # the labels that are anomalies (not "late" or "bad")
RULE_TARGETS = {PRICE_ZSCORE: PRICE_KINDS, PRICE_JUMP: PRICE_KINDS, VOLUME_ZSCORE: VOLUME_KINDS}
ANY = "any"
# The anomalies table holds each engine's findings (column engine, db/schema/013_anomalies_engine.sql): the
# DataStream job's detector, which has every rule, is what `make score` and the dashboard score and show
# unless asked for another; the Flink SQL job's rows ("sql") are its price_zscore rule only.
DETECTOR_ENGINE = "datastream"


@dataclass(frozen=True)
class RuleScore:
    rule: str
    detections: int
    true_detections: int
    recall: dict[str, float | None] = field(default_factory=dict)  # per kind; None: no label of that kind
    caught: int = 0  # labels of its kinds it caught
    labelled: int = 0  # labels of its kinds
    median_delay_ms: float | None = None

    @property
    def precision(self) -> float | None:
        return self.true_detections / self.detections if self.detections else None

    @property
    def overall_recall(self) -> float | None:
        return self.caught / self.labelled if self.labelled else None

    @property
    def f1(self) -> float | None:
        precision, recall = self.precision, self.overall_recall
        if precision is None or recall is None or precision + recall == 0:
            return None
        return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class ScoreTable:
    rules: dict[str, RuleScore]  # RULES in order, then ANY
    labels: dict[str, int]  # anomaly labels per kind

    def render(self) -> str:
        def number(value: float | None, digits: int = 3) -> str:
            return "-" if value is None else f"{value:.{digits}f}"

        kinds = [kind for kind in ANOMALY_KINDS if self.labels.get(kind)]
        header = (f"{'rule':14s} {'found':>6s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'delay ms':>9s}  "
                  + "  ".join(f"{kind:>11s}" for kind in kinds))
        lines = [header]
        for score in self.rules.values():
            per_kind = "  ".join(f"{number(score.recall.get(kind)):>11s}" for kind in kinds)
            delay = "-" if score.median_delay_ms is None else f"{score.median_delay_ms:.0f}"
            lines.append(f"{score.rule:14s} {score.detections:6d} {number(score.precision):>9s} "
                         f"{number(score.overall_recall):>7s} {number(score.f1):>6s} {delay:>9s}  {per_kind}")
        lines.append("labels: " + ", ".join(f"{kind} {self.labels.get(kind, 0)}" for kind in ANOMALY_KINDS))
        return "\n".join(lines)


def score(detections: Iterable[tuple[str, str, int, int | None]], labels: Iterable[dict]) -> ScoreTable:
    """The table for these detections (trade_id, rule, event_time, detected_at) and labels (dicts)."""
    kind_of = {label["trade_id"]: label["kind"] for label in labels if label["kind"] in ANOMALY_KINDS}
    labelled = {kind: {trade_id for trade_id, of in kind_of.items() if of == kind} for kind in ANOMALY_KINDS}
    by_rule: dict[str, dict[str, int | None]] = {rule: {} for rule in RULES}
    flagged: dict[str, int | None] = {}
    for trade_id, rule, event_time, detected_at in detections:
        if rule not in by_rule:
            raise ValueError(f"unknown rule {rule!r} (rules: {', '.join(RULES)})")
        delay = None if detected_at is None else detected_at - event_time
        by_rule[rule][trade_id] = delay
        # A trade's delay in the "any" row is its first detection's.
        known = [value for value in (flagged.get(trade_id), delay) if value is not None]
        flagged[trade_id] = min(known) if known else None

    def rule_score(name: str, found: dict[str, int | None], kinds: tuple[str, ...]) -> RuleScore:
        true = [trade_id for trade_id in found if kind_of.get(trade_id) in kinds]
        caught = {kind: len(labelled[kind] & found.keys()) for kind in kinds}
        recall = {kind: caught[kind] / len(labelled[kind]) if labelled[kind] else None for kind in kinds}
        true_delays = [found[trade_id] for trade_id in true if found[trade_id] is not None]
        return RuleScore(name, len(found), len(true), recall, sum(caught.values()),
                         sum(len(labelled[kind]) for kind in kinds),
                         statistics.median(true_delays) if true_delays else None)

    rules = {rule: rule_score(rule, by_rule[rule], RULE_TARGETS[rule]) for rule in RULES}
    rules[ANY] = rule_score(ANY, flagged, ANOMALY_KINDS)
    return ScoreTable(rules, {kind: len(ids) for kind, ids in labelled.items()})
