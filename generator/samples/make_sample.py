"""Rebuilds sample_trades.csv deterministically from the model: `python -m generator.samples.make_sample`.

300 trades of five symbols over about 30 s of event time starting 2025-01-02T14:30:00Z (seed 7), with
columns timestamp (epoch ms), symbol, price, size, side: the format --replay reads.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from generator.model import build_universe, run_token
from generator.stream import StreamOptions, generate
from marketpulse.times import parse_timestamp

SAMPLE = Path(__file__).with_name("sample_trades.csv")
SEED = 7
ROWS = 300
SYMBOLS = ["AAPL", "MSFT", "NVDA", "TSLA", "JPM"]


def sample_csv() -> str:
    start_ms = parse_timestamp("2025-01-02T14:30:00Z")
    opts = StreamOptions(universe=build_universe(SYMBOLS, SEED), seed=SEED, start_ms=start_ms,
                         event_rate=10.0, run=run_token(SEED, start_ms))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["timestamp", "symbol", "price", "size", "side"])
    for i, (_, _, _, messages) in enumerate(generate(opts)):
        if i == ROWS:
            break
        trade = json.loads(messages[0][2])
        writer.writerow([trade["event_time"], trade["symbol"], f"{trade['price']:.2f}", trade["size"],
                         trade["side"]])
    return out.getvalue()


if __name__ == "__main__":
    SAMPLE.write_text(sample_csv())
    print(f"wrote {SAMPLE}")
