"""dashboard/alerts_strip.py: the live alert strip's chips, ages and notes (no database, no browser)."""

from datetime import UTC, datetime, timedelta

import pandas as pd
from dash import html

from dashboard import alerts_strip
from marketpulse.config import load_settings

NOW = datetime(2025, 3, 14, 15, 0, tzinfo=UTC)


def frame(rows):
    return pd.DataFrame.from_records(rows, columns=["symbol", "rule", "price", "z_score", "event_time",
                                                   "decided_at", "trade_id"])


def texts(component) -> list[str]:
    return [child.children for child in component.children]


def test_chips_show_symbol_rule_statistic_price_time_and_age_newest_first():
    chips = alerts_strip.items(frame([
        ("AAPL", "price_jump", 212.41, 3.42, pd.Timestamp(NOW - timedelta(seconds=4)), NOW, "t1"),
        ("TSLA", "price_zscore", 1251.07, -6.31, pd.Timestamp(NOW - timedelta(minutes=2)), NOW, "t2"),
        ("MSFT", "volume_zscore", None, None, NOW - timedelta(hours=3), NOW, "t3"),
    ]), NOW)
    assert [texts(c) for c in chips] == [
        ["AAPL", "price jump", "+3.42%", "212.41", "14:59:56", "4 s ago"],
        ["TSLA", "price move", "z -6.3", "1,251.07", "14:58:00", "2 min ago"],
        ["MSFT", "volume spike", "", "—", "12:00:00", "3 h ago"],
    ]
    assert [c.className for c in chips] == ["alert-chip fresh", "alert-chip", "alert-chip"]
    assert chips[0].title.startswith("trade t1 · price_jump")


def test_age_never_negative_and_in_large_units():
    assert alerts_strip.age_text(-3) == "0 s ago"
    assert alerts_strip.age_text(90) == "2 min ago"
    assert alerts_strip.age_text(3 * 86400) == "3 d ago"


class FakeDb:
    def __init__(self, exists=True, rows=()):
        self.exists, self.rows_ = exists, rows

    def table_exists(self, name):
        return self.exists

    def frame(self, sql, params):
        assert "decision = 'delivered'" in sql and params == {"limit": 8}
        return frame(self.rows_)


def render(db):
    import dash

    app = dash.Dash(__name__)
    app.layout = alerts_strip.layout(load_settings(environ={}))
    alerts_strip.register(app, db, load_settings(environ={}))
    callback = next(v for k, v in app.callback_map.items() if "alert-strip-items" in k)
    return callback["callback"].__wrapped__(0)


def test_notes_when_there_is_nothing_to_show():
    assert "No alert table yet" in render(FakeDb(exists=False)).children
    assert "No alerts delivered yet" in render(FakeDb()).children


def test_layout_polls_on_its_own_interval():
    strip = alerts_strip.layout(load_settings(environ={}))
    interval = strip.children[-1]
    assert interval.id == "alert-strip-tick" and interval.interval == 2000
    assert isinstance(strip.children[1], html.Div)
