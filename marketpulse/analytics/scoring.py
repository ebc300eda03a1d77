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

Episodes (EPISODE_KINDS, volume_surge_flat): one label per trade of an injected stretch, all with the same
"episode" (the trade id of its first trade); an episode counts once, as one injected thing. The trade
rules are not meant for them: each rule's column of an episode kind is the share of episodes it flagged at
least one trade of (what it caught of them; its precision and F1 stay on RULE_TARGETS).

The multivariate window detector (row MULTIVARIATE, when the flagged windows are given) is scored per
window: a flagged window (symbol, [start, end)) is a true detection when it holds a labelled trade of any
anomaly kind or episode (its symbol, start <= event_time < end): it is told no kind, and a window with a
+20 % spike in it is anomalous. recall[kind]: the injected things of that kind (a label, or an episode) with
a trade in at least one flagged window; F1 over all kinds together; no delay (a window is scored when it
closes). A symbol's windows during the detector's warm-up are never scored: score from after it (--from).
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from marketpulse.analytics.detector import PRICE_JUMP, PRICE_ZSCORE, RULES, VOLUME_ZSCORE

PRICE_KINDS = ("price_spike", "price_crash")
VOLUME_KINDS = ("volume_spike",)
ANOMALY_KINDS = PRICE_KINDS + VOLUME_KINDS  # one-trade anomalies (not "late" or "bad")
EPISODE_KINDS = ("volume_surge_flat",)  # anomalies over a stretch of trades, one label per trade
LABEL_KINDS = ANOMALY_KINDS + EPISODE_KINDS  # every label that is an anomaly
RULE_TARGETS = {PRICE_ZSCORE: PRICE_KINDS, PRICE_JUMP: PRICE_KINDS, VOLUME_ZSCORE: VOLUME_KINDS}
ANY = "any"
MULTIVARIATE = "multivariate"  # the window detector's row (marketpulse.analytics.multivariate)
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
    rules: dict[str, RuleScore]  # RULES in order, then ANY, then MULTIVARIATE if windows were scored
    labels: dict[str, int]  # anomaly labels per kind; episodes for EPISODE_KINDS

    @property
    def kinds(self) -> list[str]:
        """The kinds with labels in this table, in LABEL_KINDS order: its per-kind columns."""
        return [kind for kind in LABEL_KINDS if self.labels.get(kind)]

    def render(self) -> str:
        def number(value: float | None, digits: int = 3) -> str:
            return "-" if value is None else f"{value:.{digits}f}"

        kinds = self.kinds
        header = (f"{'rule':14s} {'found':>6s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'delay ms':>9s}  "
                  + "  ".join(f"{kind:>11s}" for kind in kinds))
        lines = [header]
        for score in self.rules.values():
            per_kind = "  ".join(f"{number(score.recall.get(kind)):>11s}" for kind in kinds)
            delay = "-" if score.median_delay_ms is None else f"{score.median_delay_ms:.0f}"
            lines.append(f"{score.rule:14s} {score.detections:6d} {number(score.precision):>9s} "
                         f"{number(score.overall_recall):>7s} {number(score.f1):>6s} {delay:>9s}  {per_kind}")
        lines.append("labels: " + ", ".join(f"{kind} {self.labels.get(kind, 0)}" for kind in ANOMALY_KINDS)
                     + "".join(f", {kind} {self.labels.get(kind, 0)} episodes" for kind in EPISODE_KINDS))
        if MULTIVARIATE in self.rules:
            lines.append(f"{MULTIVARIATE}: found = anomalous windows, a true one holds an injected anomaly; "
                         "recall per injected thing (an episode once)")
        return "\n".join(lines)


def episode_of(label: dict) -> str:
    """The injected thing a label belongs to: its episode for EPISODE_KINDS, else its trade."""
    return label.get("episode") or label["trade_id"]


def score(detections: Iterable[tuple[str, str, int, int | None]], labels: Iterable[dict],
          windows: Iterable[tuple[str, int, int]] | None = None) -> ScoreTable:
    """The table for these detections (trade_id, rule, event_time, detected_at) and labels (dicts); with
    `windows`, the multivariate detector's anomalous windows (symbol, start ms, end ms), its row too."""
    labels = [label for label in labels if label["kind"] in LABEL_KINDS]
    episodes = {kind: defaultdict(set) for kind in EPISODE_KINDS}  # kind -> episode -> its trade ids
    for label in labels:
        if label["kind"] in EPISODE_KINDS:
            episodes[label["kind"]][episode_of(label)].add(label["trade_id"])
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
        # What it caught of the episodes (not its targets: precision and F1 leave them out).
        for kind, of_kind in episodes.items():
            if of_kind:
                recall[kind] = sum(1 for ids in of_kind.values() if ids & found.keys()) / len(of_kind)
        return RuleScore(name, len(found), len(true), recall, sum(caught.values()),
                         sum(len(labelled[kind]) for kind in kinds),
                         statistics.median(true_delays) if true_delays else None)

    rules = {rule: rule_score(rule, by_rule[rule], RULE_TARGETS[rule]) for rule in RULES}
    rules[ANY] = rule_score(ANY, flagged, ANOMALY_KINDS)
    if windows is not None:
        rules[MULTIVARIATE] = window_score(list(windows), labels)
    counts = {kind: len(ids) for kind, ids in labelled.items()}
    counts.update({kind: len(of_kind) for kind, of_kind in episodes.items()})
    return ScoreTable(rules, counts)


def window_score(windows: list[tuple[str, int, int]], labels: list[dict]) -> RuleScore:
    """The multivariate detector's row: anomalous windows against the injected things (module docstring)."""
    by_symbol: dict[str, list[tuple[int, str, str]]] = defaultdict(list)  # (event_time, kind, thing)
    things: dict[str, set[str]] = {kind: set() for kind in LABEL_KINDS}
    for label in labels:
        thing = episode_of(label)
        things[label["kind"]].add(thing)
        by_symbol[label.get("symbol") or ""].append((int(label["event_time"]), label["kind"], thing))
    for held in by_symbol.values():
        held.sort()
    caught: dict[str, set[str]] = {kind: set() for kind in LABEL_KINDS}
    true = 0
    for symbol, start, end in windows:
        held = by_symbol.get(symbol, [])
        inside = held[bisect.bisect_left(held, (start,)):bisect.bisect_left(held, (end,))]
        true += bool(inside)
        for _event_time, kind, thing in inside:
            caught[kind].add(thing)
    recall = {kind: len(caught[kind]) / len(things[kind]) if things[kind] else None for kind in LABEL_KINDS}
    return RuleScore(MULTIVARIATE, len(windows), true, recall, sum(len(c) for c in caught.values()),
                     sum(len(t) for t in things.values()), None)
