"""Detection quality of the anomaly detector on the generator's own market, offline (no stack needed).

    .venv/bin/python bench/detection.py [--rates 200,2000,5000] [--minutes 10] [--anomaly-rate 0.002]

For each trade rate (all symbols together, event time), the seeded generator stream of [generator] symbols
is run twice through marketpulse.analytics.AnomalyDetector, one detector per symbol in the order the
trades reach Kafka (what the DataStream job does):

    injected   --anomaly-rate of the trades replaced by a labelled price spike/crash or volume spike at the
               generator's default magnitudes: the table of marketpulse.analytics.scoring (per rule:
               detections, precision, recall overall and per kind, F1)
    quiet      no injection: false alarms per symbol-hour per rule

The detector's settings are [detector] in conf/pipeline.toml (MARKETPULSE_DETECTOR_* overrides apply).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.injections import AnomalyOptions  # noqa: E402
from generator.model import build_universe  # noqa: E402
from generator.stream import StreamOptions, generate  # noqa: E402
from marketpulse.analytics import AnomalyDetector, DetectorConfig  # noqa: E402
from marketpulse.analytics.detector import RULES  # noqa: E402
from marketpulse.analytics.scoring import ScoreTable, score  # noqa: E402
from marketpulse.config import load_settings  # noqa: E402
from marketpulse.trade import InvalidTrade, parse_trade  # noqa: E402

START_MS = 1_735_828_200_000


def run(config: DetectorConfig, symbols: list[str], rate: float, minutes: float, anomalies: AnomalyOptions,
        seed: int) -> tuple[ScoreTable, int]:
    """The detection table of one seeded stream, and how many valid trades it had."""
    options = StreamOptions(universe=build_universe(symbols, seed), seed=seed, start_ms=START_MS,
                            event_rate=rate, run=f"bench{seed}", end_offset_s=minutes * 60,
                            anomalies=anomalies)
    detectors: dict[str, AnomalyDetector] = {}
    detections: list[tuple[str, str, int, None]] = []
    labels: list[dict] = []
    trades = 0
    for _offset, _index, _n, messages in generate(options):
        (_topic, _key, value), *label_messages = messages
        labels.extend(json.loads(label) for _label_topic, _label_key, label in label_messages)
        try:
            trade = parse_trade(value)
        except InvalidTrade:
            continue
        trades += 1
        detector = detectors.get(trade.symbol)
        if detector is None:
            detector = detectors[trade.symbol] = AnomalyDetector(config)
        detections.extend((anomaly.trade_id, anomaly.rule, anomaly.event_time, None)
                          for anomaly in detector.push(trade))
    return score(detections, labels), trades


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
        table, trades = run(config, symbols, rate, args.minutes, injected, args.seed)
        print(f"== {rate:g} trades/s, injected, {trades} trades")
        print(textwrap.indent(table.render(), "   "))
        quiet, quiet_trades = run(config, symbols, rate, args.minutes, AnomalyOptions(), args.seed + 1)
        symbol_hours = len(symbols) * args.minutes / 60
        alarms = ", ".join(f"{rule} {quiet.rules[rule].detections / symbol_hours:.2f}" for rule in RULES)
        print(f"   quiet ({quiet_trades} trades): false alarms per symbol-hour: {alarms}")
        print(f"   ({time.perf_counter() - started:.0f} s)\n")


if __name__ == "__main__":
    main()
