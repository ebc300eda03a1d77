"""The JSON API's parameter parsing (dashboard/api.py), without a server."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dashboard.api import BadRequest, parse_time

T = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize("raw", [
    "2025-01-02T14:30:00Z", "2025-01-02T14:30:00+00:00", "2025-01-02 14:30:00", "2025-01-02T14:30",
    # An unencoded '+' arrives as a space after URL decoding (?from=2025-01-02T14:30:00+00:00): was a 400.
    "2025-01-02T14:30:00 00:00", "2025-01-02 14:30:00 00:00", "2025-01-02T14:30:00.000 0000",
])
def test_utc_times_in_every_spelling(raw):
    assert parse_time("from", raw) == T


def test_an_offset_that_lost_its_plus_keeps_its_value():
    assert parse_time("to", "2025-01-02T16:30:00 02:00") == T
    assert parse_time("to", "2025-01-02T16:30:00 02:00").utcoffset() == timedelta(hours=2)
    assert parse_time("to", "2025-01-02T12:30:00-02:00") == T.astimezone(timezone(timedelta(hours=-2)))


@pytest.mark.parametrize("raw", ["yesterday", "2025-13-01", "14:30 00:00", "2025-01-02T14:30:00 +00:00x"])
def test_a_bad_time_is_a_400_with_an_example(raw):
    with pytest.raises(BadRequest, match="is not an ISO-8601 time"):
        parse_time("from", raw)


def test_empty_means_unbounded():
    assert parse_time("from", None) is None and parse_time("from", "") is None
