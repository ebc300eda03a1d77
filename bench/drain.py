"""Drain rates of the plain consumer, the DataStream job and the SQL job, on one topic in one run.

    .venv/bin/python bench/drain.py [--count 1000000] [--topic T [--keep-topic]] [--parallelism N]
                                    [--sql-script sql/window_metrics.sql]

Makes a topic of --count seeded trades once (closed by a watermark heartbeat per partition), then drains it
with bench/plain_consumer.py (the seeds' design: one kafka-python consumer, 60 s OHLC/VWAP per symbol in a
dict, its windows written to PostgreSQL at the end), jobs/market_metrics.py and the SQL job, one after the
other, each into its own scratch database. Each is timed from its start (process start, job submission)
until its last window row is in PostgreSQL, and checked against the plain consumer's windows. Prints one
table: engine, records, seconds, rate (= records / seconds as printed), ratio to the plain consumer.
How it measures: bench/lib/drain.py; the figures: bench/lib/figures.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.lib import drain  # noqa: E402

if __name__ == "__main__":
    sys.exit(drain.main(drain.ENGINES, __doc__.split("\n\n")[0]))
