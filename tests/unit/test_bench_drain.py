"""The drain benchmarks' pure parts (bench/lib/figures.py, bench/plain_consumer.py): the printed figures
divide, the closing heartbeat closes every window, the completion rule, and the plain consumer's windows
against the slow reference (tests/reference.py) on a seeded stream with bad records and heartbeats."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

import pytest

from bench.lib.figures import Completion, Figure, closing_heartbeat_ms, table
from bench.plain_consumer import valid_trades, windows_of
from generator.injections import AnomalyOptions, BadOptions, DisorderOptions
from generator.model import build_universe
from generator.stream import StreamOptions, generate
from marketpulse.trade import heartbeat_value
from tests.pipeline import START_MS, reference_for, window_differences


def test_the_printed_rate_is_the_printed_records_over_the_printed_seconds():
    figure = Figure.measured("datastream", 1_000_000, 217.3449)
    assert figure.seconds == 217.34
    assert figure.rate == round(1_000_000 / 217.34) == 4_601


def test_the_table_can_be_checked_by_hand():
    plain = Figure.measured("plain", 1_000_000, 11.987)
    runs = [plain, Figure.measured("datastream", 1_000_000, 229.111), Figure.measured("sql", 1_000_000, 19.5)]
    lines = table(runs, plain)
    assert lines[0].split() == ["engine", "records", "seconds", "rate/s", "ratio", "to", "plain"]
    printed = {}
    for line in lines[1:]:
        engine, records, seconds, rate, ratio = line.split()
        records, rate = int(records.replace(",", "")), int(rate.replace(",", ""))
        assert rate == round(records / float(seconds)), line
        printed[engine] = (rate, float(ratio))
    assert printed["plain"][1] == 1.0
    for engine in ("datastream", "sql"):
        assert printed[engine][1] == pytest.approx(printed[engine][0] / printed["plain"][0], abs=5e-4)
    assert len(table(runs)[0].split()) == 4  # no baseline: no ratio column


def test_a_drain_takes_time():
    with pytest.raises(ValueError, match="cannot be a drain time"):
        Figure.measured("sql", 10, 0.001)


@pytest.mark.parametrize("max_event", [START_MS, START_MS + 1, START_MS + 59_999, START_MS + 60_000,
                                       START_MS + 4_999_123])
def test_the_closing_heartbeat_closes_the_last_window_of_every_size_and_no_later(max_event):
    bound, grace = 2000, 500

    def watermark(heartbeat: int) -> int:  # what a record at this event time makes of its partition's
        return heartbeat - bound - grace - 1

    heartbeat = closing_heartbeat_ms(max_event, (60, 10), bound, grace)
    for size_ms in (60_000, 10_000):
        last_end = max_event - max_event % size_ms + size_ms
        assert watermark(heartbeat) >= last_end - 1  # the window [start, end) fires at end - 1
    last_end_60 = max_event - max_event % 60_000 + 60_000
    assert watermark(heartbeat - 1) < last_end_60 - 1


def test_completion_waits_for_the_expected_rows_then_for_quiet():
    completion = Completion(expected=3, settle_s=5, stall_s=30)
    assert completion.see(0, 0, 0) is None
    assert completion.see(10, 2, 12) is None
    assert completion.see(11, 3, 18) is None  # the expected rows are in, the other size may still come
    assert completion.see(15, 3, 18) is None
    assert completion.see(16, 3, 18) == "done"


def test_completion_gives_up_when_nothing_moves():
    completion = Completion(expected=3, settle_s=5, stall_s=30)
    assert completion.see(0, 1, 1) is None
    assert completion.see(29, 1, 1) is None
    assert completion.see(30, 1, 1) == "stalled"
    with pytest.raises(ValueError):
        Completion(expected=1, settle_s=30, stall_s=5)


def test_completion_says_incomplete_when_everything_was_read_and_rows_are_missing():
    completion = Completion(expected=20, settle_s=5, stall_s=300, final_s=30)
    assert completion.see(0, 15, 48, all_read=False) is None
    assert completion.see(40, 15, 48, all_read=False) is None  # not all read: still waiting
    assert completion.see(41, 15, 50, all_read=True) is None  # a row came
    assert completion.see(70, 15, 50, all_read=True) is None
    assert completion.see(71, 15, 50, all_read=True) == "incomplete"


def seeded_values(seed: int) -> list[bytes]:
    """A seeded generator stream's trade-topic values (bad records, late and anomalous trades among them),
    with a heartbeat after every 500th value as the generator sends them on the wall clock."""
    options = StreamOptions(universe=build_universe(["AAPL", "MSFT", "TSLA"], seed), seed=seed,
                            start_ms=START_MS, event_rate=50, run=f"unit{seed}", end_offset_s=180,
                            anomalies=AnomalyOptions(rate=0.01), disorder=DisorderOptions(late_fraction=0.02),
                            bad=BadOptions(fraction=0.02))
    values = []
    for _offset, _index, _n, messages in generate(options):
        values.append(messages[0][2])
        if len(values) % 501 == 500:
            values.append(heartbeat_value(START_MS + len(values)))
    return values


@pytest.mark.parametrize("seed", [7, 42])
def test_the_plain_consumer_computes_the_reference_windows(seed):
    values = seeded_values(seed)
    counts: Counter = Counter()
    rows = windows_of(values, 60, counts)

    valid = list(valid_trades(values, Counter()))
    assert counts["trades"] == len(valid) > 5_000
    assert counts["bad"] > 50
    assert counts["heartbeats"] == sum(1 for value in values if value.startswith(b'{"heartbeat'))
    assert counts["trades"] + counts["bad"] + counts["heartbeats"] == len(values)

    got = {(row.symbol, row.window_seconds, row.window_start): asdict(row) for row in rows}
    missing, extra, different = window_differences(got, reference_for(valid, (60,)))
    assert (missing, extra, different) == ([], [], [])
    assert len(got) == 3 * 3  # three symbols, three minutes

