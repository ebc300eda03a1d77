"""Pure helpers of the DataStream job: SQL templates, --start-from, lateness, release times and release()."""

import argparse
import math

import pytest

from jobs.market_metrics import SINKS_SQL, parse_start_from
from marketpulse.analytics import AnomalyDetector, DetectorConfig, aggregate_windows
from marketpulse.config import load_settings
from marketpulse.flink.release import (
    MIN_WATERMARK,
    NEW_CLOCK,
    AnalyticsConfig,
    effective_watermark,
    is_late,
    release,
    release_time,
    take_due,
    window_close_time,
    with_due,
)
from marketpulse.sqltemplate import TemplateError, render, split_statements, sql_variables
from marketpulse.trade import Trade

BASE = 1_700_000_100_000  # a multiple of 60 s
DETECTOR = DetectorConfig(lookback=5, warmup=3, z_threshold=5.0, min_stddev=1e-4, price_jump_pct=3.0,
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


def test_the_sink_script_renders_to_five_tables_and_five_inserts():
    settings = load_settings(environ={})
    statements = split_statements(render(SINKS_SQL.read_text(), sql_variables(settings)))
    creates = [s for s in statements if s.startswith("CREATE TEMPORARY TABLE")]
    inserts = [s for s in statements if s.startswith("INSERT INTO")]
    assert len(creates) == 5 and len(inserts) == 5 and len(statements) == 10
    postgres_sinks = [s for s in creates if "'marketpulse-jdbc'" in s]
    assert len(postgres_sinks) == 4
    assert all("jdbc:postgresql://127.0.0.1:5432/marketpulse" in s for s in postgres_sinks)
    assert "'topic' = 'anomalies'" in statements[2] and "'key.fields' = 'symbol'" in statements[2]
    # Every Postgres sink declares the table's primary key.
    keys = {s.split()[3]: s[s.index("PRIMARY KEY"):].split(")")[0] for s in creates if "PRIMARY KEY" in s}
    assert keys == {
        "window_metrics_sink": "PRIMARY KEY (engine, symbol, window_seconds, window_start",
        "anomalies_sink": "PRIMARY KEY (trade_id, `rule`",
        "late_trades_sink": "PRIMARY KEY (engine, trade_id",
        "dead_letters_sink": "PRIMARY KEY (engine, topic, kafka_partition, kafka_offset",
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


# --- lateness and release times ----------------------------------------------------------------------

def test_late_means_at_or_behind_the_watermark_minus_the_allowed_lateness():
    assert not is_late(BASE, -(2**63), 0)
    assert is_late(BASE, BASE, 0) and not is_late(BASE + 1, BASE, 0)
    assert not is_late(BASE, BASE, 5000) and is_late(BASE - 5000, BASE, 5000)


def test_release_time_is_the_end_of_the_slot_of_event_time_plus_lateness():
    assert release_time(BASE, 0, 1000) == BASE + 999
    assert release_time(BASE + 999, 0, 1000) == BASE + 999
    assert release_time(BASE + 1000, 0, 1000) == BASE + 1999
    assert release_time(BASE + 1, 5000, 1000) == BASE + 5999
    # The last slot of a window is released exactly when the window closes (end - 1 + L).
    assert release_time(BASE + 59_999, 2000, 1000) == window_close_time(BASE + 60_000, 2000) == BASE + 61_999


def test_config_from_settings_and_validation():
    config = AnalyticsConfig.from_settings(load_settings(environ={}))
    assert config.window_sizes_ms == (60_000, 10_000) and config.allowed_lateness_ms == 0
    assert config.state_ttl_minutes == 60 and config.detector.warmup == 30
    with pytest.raises(ValueError, match="multiple of the release interval"):
        AnalyticsConfig((60_000,), 0, DETECTOR, 60, release_interval_ms=7000)
    with pytest.raises(ValueError, match="distinct"):
        AnalyticsConfig((10_000, 10_000), 0, DETECTOR, 60)


# --- release() ---------------------------------------------------------------------------------------

def pending(trade: Trade):
    return (trade.event_time, trade.trade_id, trade.price, trade.size, trade.side)


def test_release_feeds_sorted_trades_and_closes_windows_at_their_close_time():
    config = AnalyticsConfig((10_000, 5_000), 0, DETECTOR, 60)
    prices = [100.0, 100.1, 100.0, 100.1, 100.0, 100.1, 110.0, 100.0]
    trades = [Trade(f"t{i}", "AAPL", price, 100, "BUY", BASE + 1000 * i + 500)
              for i, price in enumerate(prices)]
    open_windows, detector = {}, AnomalyDetector(DETECTOR)
    emitted, anomalies, timers = [], [], []
    # Release slot by slot, each slot's trades given in reverse order.
    for slot in range(8):
        due = BASE + slot * 1000 + 999
        due_trades = [pending(t) for t in reversed(trades) if release_time(t.event_time, 0, 1000) == due]
        out = release("AAPL", due_trades, open_windows, detector, config, due)
        emitted += out.windows
        anomalies += out.anomalies
        timers += out.timers
    assert timers == [BASE + 9_999, BASE + 4_999, BASE + 9_999]  # [0,10), [0,5), then [5,10) opened
    assert [(w.window_seconds, w.window_start - BASE) for w in emitted] == [(5, 0)]
    assert emitted[0] == aggregate_windows(trades[:5], 5)[0]
    assert sorted(open_windows) == [5_000, 10_000]
    assert [(a.trade_id, a.rule) for a in anomalies] == [("t6", "price_zscore"), ("t6", "price_jump")]
    assert math.isclose(anomalies[1].z_score, (110.0 / 100.1 - 1) * 100)
    # A close-only timer (no trades) emits the remaining windows; detector untouched.
    out = release("AAPL", [], open_windows, detector, config, BASE + 9_999)
    assert out.anomalies == [] and open_windows == {}
    assert sorted((w.window_seconds, w.trade_count) for w in out.windows) == [(5, 3), (10, 8)]
    assert [w for w in out.windows if w.window_seconds == 10] == aggregate_windows(trades, 10)


def test_release_order_does_not_depend_on_the_order_given():
    config = AnalyticsConfig((10_000,), 0, DETECTOR, 60)
    trades = [Trade(f"t{i:02d}", "AAPL", 100.0 + (i % 3) * 0.1, 100 + i, "SELL", BASE + 100 * (i // 2))
              for i in range(20)]
    results = []
    for order in (trades, list(reversed(trades))):
        open_windows = {}
        out = release("AAPL", [pending(t) for t in order], open_windows, AnomalyDetector(DETECTOR), config,
                      BASE + 9_999)
        results.append((out.windows, out.anomalies))
    assert results[0] == results[1]
    assert results[0][0][0].open == 100.0 and results[0][0][0].close == trades[19].price


# --- restores: the release clock ---------------------------------------------------------------------

def test_a_restored_symbol_judges_trades_against_what_it_released_not_the_reset_watermark():
    clock = take_due(with_due(NEW_CLOCK, BASE + 999), BASE + 999)[1]
    # After a restore the operator's watermark is Long.MIN_VALUE again; the clock is in the checkpoint.
    watermark = effective_watermark(MIN_WATERMARK, clock)
    assert watermark == BASE + 999
    assert is_late(BASE + 999, watermark, 0) and not is_late(BASE + 1000, watermark, 0)
    assert effective_watermark(BASE + 5000, clock) == BASE + 5000
    assert effective_watermark(MIN_WATERMARK, NEW_CLOCK) == MIN_WATERMARK


def test_a_timer_releases_every_slot_due_by_then_including_ones_whose_timer_was_lost():
    clock = NEW_CLOCK
    for due in (BASE + 2999, BASE + 999, BASE + 1999, BASE + 999):
        clock = with_due(clock, due)
    assert clock == (MIN_WATERMARK, (BASE + 999, BASE + 1999, BASE + 2999))
    # The timers of 999 and 1999 never reached the timer service: 2999 releases all three, in one go.
    dues, clock = take_due(clock, BASE + 2999)
    assert dues == [BASE + 999, BASE + 1999, BASE + 2999] and clock == (BASE + 2999, ())
    # A window-close timer with no slot of its own still moves the clock on.
    dues, clock = take_due(with_due(clock, BASE + 5999), BASE + 3999)
    assert dues == [] and clock == (BASE + 3999, (BASE + 5999,))
    # A timer at or before what was released (registered again after a restore) releases nothing.
    assert take_due(clock, BASE + 3999) == ([], None) and take_due(clock, BASE + 999) == ([], None)


def test_releasing_a_stranded_slot_with_a_later_one_gives_the_uninterrupted_windows():
    """Slots [0 s, 9 s] of one 10 s window and the first slot of the next: released slot by slot, or with
    slots 3..9 stranded and swept up by the timer of slot 10, the windows and anomalies are the same."""
    config = AnalyticsConfig((10_000,), 0, DETECTOR, 60)
    trades = [Trade(f"t{i:02d}", "AAPL", 100.0 + (i % 4) * 0.05, 100 + i, "BUY", BASE + 1000 * i + 7)
              for i in range(11)]

    def run(groups):
        open_windows, detector, windows, anomalies = {}, AnomalyDetector(DETECTOR), [], []
        for timer, members in groups:
            out = release("AAPL", [pending(t) for t in members], open_windows, detector, config, timer)
            windows += out.windows
            anomalies += out.anomalies
        return windows, anomalies

    in_order = run([(BASE + 1000 * i + 999, [t]) for i, t in enumerate(trades)])
    swept = run([(BASE + 1000 * i + 999, [trades[i]]) for i in range(3)] + [(BASE + 10_999, trades[3:])])
    assert in_order == swept
    assert in_order[0] == aggregate_windows(trades[:10], 10)
