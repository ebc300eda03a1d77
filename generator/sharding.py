"""`--shard i/n`: instance i of n owns the symbols whose index in the full universe is i modulo n."""

from __future__ import annotations

import os
import re

SHARD_ENV = "MARKETPULSE_GENERATOR_SHARD"
_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(f"shard must look like i/n (e.g. 0/4), got {text!r}")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {text!r}: need n >= 1 and 0 <= i < n")
    return index, count


def shard_from_env(environ=os.environ) -> tuple[int, int] | None:
    value = environ.get(SHARD_ENV)
    return parse_shard(value) if value else None


def owns(symbol_index: int, shard: tuple[int, int]) -> bool:
    index, count = shard
    return symbol_index % count == index
