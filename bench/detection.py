"""Detection quality of the anomaly detector on the generator's own market, offline (no stack needed).

    .venv/bin/python bench/detection.py [--rates 200,2000,5000] [--minutes 10] [--anomaly-rate 0.002]

For each trade rate (all symbols together, event time), the seeded generator stream of [generator] symbols
is run twice through marketpulse.analytics.AnomalyDetector, one detector per symbol in the order the
trades reach Kafka (what the DataStream job does):

    injected   --anomaly-rate of the trades replaced by a labelled price spike/crash or volume spike at the
               generator's default magnitudes; per rule: detections, precision (share on a trade labelled
               with a kind the rule is for) and recall per kind (share of those labels the rule caught)
    quiet      no injection: false alarms per symbol-hour per rule

The detector's settings are [detector] in conf/pipeline.toml (MARKETPULSE_DETECTOR_* overrides apply).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.injections import AnomalyOptions  # noqa: E402
from generator.model import build_universe  # noqa: E402
from generator.stream import StreamOptions, generate  # noqa: E402
from marketpulse.analytics import AnomalyDetector, DetectorConfig  # noqa: E402
from marketpulse.analytics.detector import PRICE_JUMP, PRICE_ZSCORE, RULES, VOLUME_ZSCORE  # noqa: E402
from marketpulse.config import load_settings  # noqa: E402
from marketpulse.trade import InvalidTrade, parse_trade  # noqa: E402

START_MS = 1_735_828_200_000
# The injected kinds each rule is meant to catch.
TARGETS = {PRICE_ZSCORE: ("price_spike", "price_crash"), PRICE_JUMP: ("price_spike", "price_crash"),
           VOLUME_ZSCORE: ("volume_spike",)}


def run(config: DetectorConfig, symbols: list[str], rate: float, minutes: float, anomalies: AnomalyOptions,
        seed: int) -> tuple[Counter, dict, Counter, tuple[int, dict]]:
    """(detections per rule, {rule: trade ids}, labels per kind, trades) for one seeded stream."""
    options = StreamOptions(universe=build_universe(symbols, seed), seed=seed, start_ms=START_MS,
                            event_rate=rate, run=f"bench{seed}", end_offset_s=minutes * 60,
                            anomalies=anomalies)
    detectors: dict[str, AnomalyDetector] = {}
    found: dict[str, set[str]] = defaultdict(set)
    labels: dict[str, str] = {}
    trades = 0
    for _offset, _index, _n, messages in generate(options):
        (_topic, _key, value), *label_messages = messages
        for _label_topic, _label_key, label in label_messages:
            record = json.loads(label)
            labels[record["trade_id"]] = record["kind"]
        try:
            trade = parse_trade(value)
        except InvalidTrade:
            continue
        trades += 1
        detector = detectors.get(trade.symbol)
        if detector is None:
            detector = detectors[trade.symbol] = AnomalyDetector(config)
        for anomaly in detector.push(trade):
            found[anomaly.rule].add(anomaly.trade_id)
    return Counter({rule: len(ids) for rule, ids in found.items()}), found, Counter(labels.values()), \
        (trades, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="200,2000,5000", help="trades/s, comma-separated")
    parser.add_argument("--minutes", type=float, default=10.0, help="event-time minutes per run")
    parser.add_argument("--anomaly-rate", type=float, default=0.002, help="share of injected trades")
    parser.add_argument("--volume-factor", default=None, metavar="MIN,MAX",
                        help="size factor of injected volume spikes (default: the generator's)")
    parser.add_argument("--spike-pct", default=None, metavar="MIN,MAX",
                        help="size in %% of injected price spikes/crashes (default: the generator's)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    settings = load_settings()
    config = DetectorConfig.from_settings(settings)
    symbols = list(settings.generator.symbols)
    print(f"detector: {config}")
    injected = AnomalyOptions(rate=args.anomaly_rate)
    if args.volume_factor:
        factors = tuple(float(part) for part in args.volume_factor.split(","))
        injected = replace(injected, volume_factor=factors)
    if args.spike_pct:
        injected = replace(injected, price_move=tuple(float(x) / 100 for x in args.spike_pct.split(",")))
    print(f"injected: {injected}")
    print(f"{len(symbols)} symbols, {args.minutes:g} event-time minutes per run, seed {args.seed}\n")
    for rate in (float(part) for part in args.rates.split(",")):
        started = time.perf_counter()
        counts, found, kinds, (trades, labels) = run(config, symbols, rate, args.minutes, injected, args.seed)
        print(f"== {rate:g} trades/s, injected ({trades} trades, labels {dict(sorted(kinds.items()))})")
        print(f"   {'rule':14s} {'found':>6s} {'precision':>9s}  recall per kind")
        for rule in RULES:
            ids = found.get(rule, set())
            hits = sum(1 for trade_id in ids if labels.get(trade_id) in TARGETS[rule])
            precision = hits / len(ids) if ids else float("nan")
            recall = {kind: sum(1 for trade_id in ids if labels.get(trade_id) == kind) / kinds[kind]
                      for kind in TARGETS[rule] if kinds[kind]}
            recall_text = ", ".join(f"{kind} {value:.3f}" for kind, value in recall.items())
            print(f"   {rule:14s} {len(ids):6d} {precision:9.3f}  {recall_text}")
        quiet_counts, _found, _kinds, (quiet_trades, _labels) = run(config, symbols, rate, args.minutes,
                                                                    AnomalyOptions(), args.seed + 1)
        symbol_hours = len(symbols) * args.minutes / 60
        alarms = ", ".join(f"{rule} {quiet_counts.get(rule, 0) / symbol_hours:.2f}" for rule in RULES)
        print(f"   quiet ({quiet_trades} trades): false alarms per symbol-hour: {alarms}")
        print(f"   ({time.perf_counter() - started:.0f} s)\n")


if __name__ == "__main__":
    main()
