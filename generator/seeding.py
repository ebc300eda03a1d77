"""Independent random streams per (seed, symbol, purpose).

Each symbol draws from its own generators, so a symbol's trades do not depend on which other symbols are
generated (the basis of sharding), and each concern (arrivals, prices, injections...) has its own stream, so
turning on bad records or anomalies does not change the underlying price path.
"""

from __future__ import annotations

import hashlib
import random


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()


def derived_rng(seed: int, *parts: object) -> random.Random:
    """A random.Random seeded from the seed and the given parts (stable across processes and runs)."""
    return random.Random(int.from_bytes(_digest(seed, *parts)[:8], "big"))


def derived_int(seed: int, *parts: object) -> int:
    return int.from_bytes(_digest(seed, *parts)[:8], "big")


def run_token(seed: int, start_ms: int) -> str:
    """Six hex digits in every trade id: the same for a seeded run, different for two wall-clock runs, so two
    runs into the same topic never share trade ids."""
    return _digest("run", seed, start_ms).hex()[:6]
