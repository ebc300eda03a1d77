"""Times as the command lines and files take them: epoch milliseconds or ISO 8601 (naive means UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_timestamp(text: str) -> int:
    """Epoch ms (digits) or ISO 8601 (naive means UTC) -> epoch ms; ValueError otherwise."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not epoch ms or ISO 8601: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(round(moment.timestamp() * 1000))
