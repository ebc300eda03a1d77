"""Drain rate of the Flink SQL window job over a seeded topic, beside the plain consumer's on the same topic.

    .venv/bin/python bench/sql_drain.py [--count 1000000] [--topic T [--keep-topic]]
                                        [--sql-script sql/window_metrics.sql]

bench/drain.py for the SQL job alone: the topic, then the plain consumer (bench/plain_consumer.py) and the SQL
job on it, each timed from its start until its last window row is in PostgreSQL; prints engine, records,
seconds, rate and the ratio to the plain consumer, all measured in this run (bench/lib/drain.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.lib import drain  # noqa: E402

if __name__ == "__main__":
    sys.exit(drain.main(("sql",), __doc__.split("\n\n")[0]))
