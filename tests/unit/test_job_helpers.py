"""Pure helpers of the DataStream job: SQL templates, --start-from, lateness, and the per-symbol book
(windows on arrival, final at their close timer, what survives a restore)."""

import argparse
import pickle
import random

import pytest

from jobs.market_metrics import parse_start_from, sink_statements, source_subtasks
from marketpulse.analytics import AnomalyDetector, DetectorConfig, aggregate_windows
from marketpulse.config import load_settings
from marketpulse.flink.book import (
    MIN_WATERMARK,
    AnalyticsConfig,
    DetectorSlot,
    SymbolBook,
    is_late,
    window_close_time,
)
from marketpulse.sqltemplate import TemplateError, render, split_statements
from marketpulse.trade import Trade

BASE = 1_700_000_100_000  # a multiple of 60 s
DETECTOR = DetectorConfig(lookback=5, warmup=3, z_threshold=5.0, volume_min_stddev=1e-4, price_jump_pct=3.0,
                          volume_z_threshold=4.0)


# --- SQL templates -----------------------------------------------------------------------------------

def test_render_fills_placeholders_and_rejects_unknown_ones():
    assert render("a ${x} b ${y_1}", {"x": 1, "y_1": "two"}) == "a 1 b two"
    with pytest.raises(TemplateError, match=r"unknown placeholder\(s\) nope; known: x"):
        render("${x} ${nope}", {"x": 1})


def test_split_statements_ignores_semicolons_and_dashes_in_quotes_and_comments():
    text = """-- header; not a statement
    CREATE TABLE t (a STRING) WITH ('k' = 'v;--x', 'q' = 'it''s; fine');  -- trailing; comment
    INSERT INTO `we;ird` SELECT "a;b" FROM v;
    ;
    """
    assert split_statements(text) == [
        "CREATE TABLE t (a STRING) WITH ('k' = 'v;--x', 'q' = 'it''s; fine')",
        'INSERT INTO `we;ird` SELECT "a;b" FROM v',
    ]
    with pytest.raises(TemplateError, match="unterminated"):
        split_statements("SELECT 'open")


def test_the_sink_script_renders_to_six_tables_and_six_inserts():
    settings = load_settings(environ={})
    statements = sink_statements(settings)
    creates = [s for s in statements if s.startswith(("CREATE TEMPORARY TABLE", "CREATE TABLE"))]
    inserts = [s for s in statements if s.startswith("INSERT INTO")]
    assert len(creates) == 6 and len(inserts) == 6 and len(statements) == 12
    postgres_sinks = [s for s in creates if "'marketpulse-jdbc'" in s]
    assert len(postgres_sinks) == 5
    assert all("jdbc:postgresql://127.0.0.1:5432/marketpulse" in s for s in postgres_sinks)
    assert "'topic' = 'anomalies'" in statements[2] and "'key.fields' = 'symbol'" in statements[2]
    # Every Postgres sink declares the table's primary key.
    keys = {s.split("TABLE", 1)[1].split()[0]: s[s.index("PRIMARY KEY"):].split(")")[0]
            for s in creates if "PRIMARY KEY" in s}
    assert keys == {
        "window_metrics_sink": "PRIMARY KEY (engine, symbol, window_seconds, window_start",
        "anomalies_sink": "PRIMARY KEY (engine, trade_id, `rule`",
        "late_trades_sink": "PRIMARY KEY (engine, trade_id",
        "dead_letters_sink": "PRIMARY KEY (engine, topic, kafka_partition, kafka_offset",
        "window_anomalies_sink": "PRIMARY KEY (symbol, window_seconds, window_start",
    }


# --- --start-from ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("earliest", "earliest"), ("LATEST", "latest"), ("committed", "committed"),
    ("1735828200000", 1_735_828_200_000),
    ("2025-01-02T14:30:00Z", 1_735_828_200_000),
    ("2025-01-02T14:30:00", 1_735_828_200_000),          # no zone = UTC
    ("2025-01-02T15:30:00+01:00", 1_735_828_200_000),
    ("2025-01-02T14:30:00.250Z", 1_735_828_200_250),
])
def test_start_from(text, expected):
    assert parse_start_from(text) == expected


def test_start_from_rejects_anything_else():
    with pytest.raises(argparse.ArgumentTypeError, match="earliest, latest, committed"):
        parse_start_from("yesterday")


# --- lateness -----------------------------------------------------------------------------------------

def test_late_means_at_or_behind_the_watermark_minus_the_grace():
    assert not is_late(BASE, -(2**63), 0)
    assert is_late(BASE, BASE, 0) and not is_late(BASE + 1, BASE, 0)
    assert not is_late(BASE, BASE, 5000) and is_late(BASE - 5000, BASE, 5000)
    # A window closes when nothing at or before its last ms can still be on time.
    assert window_close_time(BASE + 60_000, 2000) == BASE + 61_999
    assert is_late(BASE + 59_999, BASE + 61_999, 2000)


def test_config_from_settings_and_validation():
    config = AnalyticsConfig.from_settings(load_settings(environ={}))
    assert config.window_sizes_ms == (60_000, 10_000) and config.grace_ms == 0
    assert config.state_ttl_minutes == 60 and config.detector.warmup == 30
    with pytest.raises(ValueError, match="whole seconds"):
        AnalyticsConfig((60_500,), 0, DETECTOR, 60)
    with pytest.raises(ValueError, match="distinct"):
        AnalyticsConfig((10_000, 10_000), 0, DETECTOR, 60)


# --- the symbol book ---------------------------------------------------------------------------------

def trades_of(count: int, step_ms: int = 1000, symbol: str = "AAPL") -> list[Trade]:
    rng = random.Random(count)
    return [Trade(f"t{i:03d}", symbol, round(100 + rng.uniform(-1, 1), 2), rng.randint(1, 500),
                  rng.choice(("BUY", "SELL")), BASE + step_ms * i + 7) for i in range(count)]


def test_windows_take_trades_on_arrival_and_close_final_at_their_timer():
    config = AnalyticsConfig((10_000, 5_000), 0, DETECTOR, 60)
    trades = trades_of(12)
    book, timers = SymbolBook(), []
    for trade in trades:
        timers += book.add(trade, config)
    # [0,10) and [0,5) opened by t000, [5,10) by t005, [10,20) and [10,15) by t010.
    assert timers == [BASE + 9_999, BASE + 4_999, BASE + 4_999 + 5_000, BASE + 19_999, BASE + 14_999]
    assert book.close_due("AAPL", BASE + 4_999, config) == aggregate_windows(trades[:5], 5)
    closed = book.close_due("AAPL", BASE + 9_999, config)
    assert closed == aggregate_windows(trades[5:10], 5) + aggregate_windows(trades[:10], 10)  # (close, size)
    assert sorted(book.windows) == [(5_000, BASE + 10_000), (10_000, BASE + 10_000)]
    assert book.closed_through == BASE + 9_999


def test_window_rows_do_not_depend_on_arrival_order_within_the_window():
    config = AnalyticsConfig((10_000,), 0, DETECTOR, 60)
    trades = trades_of(10)
    rows = []
    for order in (trades, list(reversed(trades)), random.Random(3).sample(trades, len(trades))):
        book = SymbolBook()
        for trade in order:
            book.add(trade, config)
        rows.append(book.close_due("AAPL", BASE + 9_999, config))
    exact = ("open", "high", "low", "close", "volume", "trade_count", "buy_count", "sell_count")
    assert {tuple(getattr(row[0], name) for name in exact) for row in rows} == {
        tuple(getattr(aggregate_windows(trades, 10)[0], name) for name in exact)}


def test_a_restored_symbol_judges_trades_against_what_it_closed_not_the_reset_watermark():
    config = AnalyticsConfig((10_000,), 0, DETECTOR, 60)
    book = SymbolBook()
    book.add(trades_of(1)[0], config)
    book.close_due("AAPL", BASE + 9_999, config)
    restored = SymbolBook.from_state(pickle.loads(pickle.dumps(book)))
    # After a restore the operator's watermark is Long.MIN_VALUE again; the book is in the checkpoint.
    watermark = restored.effective_watermark(MIN_WATERMARK)
    assert watermark == BASE + 9_999
    assert is_late(BASE + 9_999, watermark, 0) and not is_late(BASE + 10_000, watermark, 0)
    assert restored.effective_watermark(BASE + 50_000) == BASE + 50_000
    assert SymbolBook().effective_watermark(MIN_WATERMARK) == MIN_WATERMARK


def test_a_timer_closes_every_window_due_by_then_including_ones_whose_timer_was_lost():
    config = AnalyticsConfig((10_000, 5_000), 0, DETECTOR, 60)
    trades = trades_of(25)
    book = SymbolBook()
    for trade in trades:
        book.add(trade, config)
    assert book.close_times(config) == [BASE + 4_999 + 5_000 * i for i in range(6)]
    # Only the timer of [20,25) reached the timer service: it closes the four 5 s and two 10 s windows
    # before it, oldest first, with the same rows as one timer each.
    swept = book.close_due("AAPL", BASE + 24_999, config)
    assert [(w.window_seconds, w.window_start - BASE) for w in swept] == [
        (5, 0), (5, 5_000), (10, 0), (5, 10_000), (5, 15_000), (10, 10_000), (5, 20_000)]
    assert sorted(swept, key=lambda w: (w.window_seconds, w.window_start)) == (
        aggregate_windows(trades, 5)[:5] + aggregate_windows(trades[:20], 10))
    # A timer at or before one fired (registered again after a restore) closes nothing.
    assert book.close_due("AAPL", BASE + 24_999, config) is None
    assert book.close_due("AAPL", BASE + 9_999, config) is None


def test_book_and_detector_pickle_as_plain_versioned_tuples():
    config = AnalyticsConfig((10_000,), 0, DETECTOR, 60)
    book = SymbolBook()
    for trade in trades_of(3):
        book.add(trade, config)
    stored = pickle.loads(pickle.dumps(book))
    assert type(stored) is tuple and stored == book.to_state()
    again = SymbolBook.from_state(stored)
    assert again.to_state() == book.to_state() and SymbolBook.from_state(book) is book
    assert SymbolBook.from_state(None).windows == {}

    detector = AnomalyDetector(DETECTOR)
    for trade in trades_of(10):
        detector.push(trade)
    slot = DetectorSlot(detector)
    stored = pickle.loads(pickle.dumps(slot))
    assert type(stored) is tuple and stored == detector.to_state()
    assert DetectorSlot.from_state(DETECTOR, stored).detector.to_state() == detector.to_state()
    assert DetectorSlot.from_state(DETECTOR, slot) is slot
    with pytest.raises(ValueError, match="version"):
        SymbolBook.from_state((99, 0, ()))


def test_the_pyflink_internals_are_checked_against_the_version_they_were_written_for(monkeypatch):
    import io

    import pyflink.version

    from marketpulse.flink import compat

    assert compat.check_pyflink_version(io.StringIO())  # the installed apache-flink 2.2.x
    monkeypatch.setattr(pyflink.version, "__version__", "2.3.0")
    warning = io.StringIO()
    assert not compat.check_pyflink_version(warning)
    assert "written for apache-flink 2.2.x, found 2.3.0" in warning.getvalue()


def test_pyflink_internals_are_used_in_one_module_only():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    users = sorted(path.relative_to(repo).as_posix() for folder in ("jobs", "marketpulse", "bench")
                   for path in (repo / folder).rglob("*.py")
                   if any(mark in path.read_text() for mark in ("._j_", "get_gateway")))
    assert users == ["marketpulse/flink/compat.py"]


def test_the_public_api_twins_are_chosen_by_name(monkeypatch):
    from marketpulse.flink import compat

    monkeypatch.delenv(compat.PUBLIC_API_ENV, raising=False)
    assert not any(compat.public_api(name) for name in compat.SHORTCUTS)
    monkeypatch.setenv(compat.PUBLIC_API_ENV, "event_time, key_by")
    assert [compat.public_api(name) for name in compat.SHORTCUTS] == [True, True]
    monkeypatch.setenv(compat.PUBLIC_API_ENV, "key_by")
    assert [compat.public_api(name) for name in compat.SHORTCUTS] == [False, True]
    monkeypatch.setenv(compat.PUBLIC_API_ENV, "all")
    assert all(compat.public_api(name) for name in compat.SHORTCUTS)
    monkeypatch.setenv(compat.PUBLIC_API_ENV, "keyby")
    with pytest.raises(ValueError, match="unknown shortcut.*keyby.*known: event_time, key_by"):
        compat.public_api("key_by")


# --- source subtasks -----------------------------------------------------------------------------------

def test_the_source_has_one_subtask_per_partition_and_refuses_other_counts():
    assert source_subtasks(None, "trades", 4) == 4
    assert source_subtasks(4, "trades", 4) == 4
    for wrong in (1, 2, 6):  # fewer: a lagging partition's trades turn late; more: event time never moves
        with pytest.raises(SystemExit, match=f"--source-parallelism {wrong}, but 'trades' has 4 partitions"):
            source_subtasks(wrong, "trades", 4)
