"""Progress lines a person can read: '[stack] what is happening'."""

import sys
import time

_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[stack {time.monotonic() - _T0:5.1f}s] {message}", file=sys.stderr, flush=True)
