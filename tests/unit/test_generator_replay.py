"""CSV replay: order and event times preserved, side inference, clear errors, the shipped sample."""

import json

import pytest

from generator.cli import main
from generator.replay import ReplayError, read_rows, replay_events
from generator.samples.make_sample import SAMPLE, sample_csv
from marketpulse.times import parse_timestamp
from marketpulse.trade import parse_trade

CSV = """timestamp,symbol,price,size,side
1735828200000,AAPL,230.00,100,BUY
2025-01-02T14:30:00.500Z,MSFT,420.10,5,
1735828200250,AAPL,229.99,7,
2025-01-02T14:30:01,AAPL,230.05,12,
2025-01-02T09:30:02-05:00,MSFT,420.10,3,SELL
"""


def test_parse_timestamp_accepts_epoch_ms_and_iso():
    assert parse_timestamp("1735828200000") == 1735828200000
    assert parse_timestamp("2025-01-02T14:30:00Z") == 1735828200000
    assert parse_timestamp("2025-01-02T14:30:00.125") == 1735828200125  # naive = UTC
    assert parse_timestamp("2025-01-02T09:30:00-05:00") == 1735828200000
    with pytest.raises(ValueError):
        parse_timestamp("yesterday")


def test_rows_keep_file_order_and_event_times_and_infer_side(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(CSV)
    trades = [t for _, t in read_rows(path)]
    assert [(t["symbol"], t["event_time"], t["price"], t["size"], t["side"]) for t in trades] == [
        ("AAPL", 1735828200000, 230.0, 100, "BUY"),
        ("MSFT", 1735828200500, 420.1, 5, "BUY"),  # first MSFT trade, no side: BUY
        ("AAPL", 1735828200250, 229.99, 7, "SELL"),  # down-tick
        ("AAPL", 1735828201000, 230.05, 12, "BUY"),  # up-tick
        ("MSFT", 1735828202000, 420.1, 3, "SELL"),
    ]
    assert [t["trade_id"] for t in trades] == ["AAPL-r1", "MSFT-r2", "AAPL-r3", "AAPL-r4", "MSFT-r5"]


def test_replay_events_offsets_reference_first_and_valid_trades(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(CSV)
    events = list(replay_events(path, seed=1))
    assert [e[0] for e in events] == [0.0, 0.5, 0.25, 1.0, 2.0]  # pacing offsets from the first row
    first = events[0][3]
    assert [m[0] for m in first] == ["symbols", "trades"]
    assert json.loads(first[0][2])["start_price"] == 230.0
    assert [m[0] for m in events[2][3]] == ["trades"]  # AAPL's reference only once
    for event in events:
        topic, key, value = event[3][-1]
        assert topic == "trades" and key == parse_trade(value).symbol.encode()


@pytest.mark.parametrize("body, message", [
    ("timestamp,symbol,price\n1,AAPL,1\n", "missing column(s) size"),
    ("timestamp,symbol,price,size\n1735828200000,AAPL,-3,5\n", "t.csv:2: non-positive price"),
    ("timestamp,symbol,price,size\n1735828200000,AAPL,1,5\nsoon,AAPL,1,5\n", "t.csv:3: not epoch ms"),
    ("timestamp,symbol,price,size\n1735828200000,aapl,1,5\n", "t.csv:2: bad symbol"),
    ("timestamp,symbol,price,size,side\n1735828200000,AAPL,1,5,HOLD\n", "t.csv:2: bad side"),
])
def test_bad_rows_raise_with_file_and_line(tmp_path, body, message):
    path = tmp_path / "t.csv"
    path.write_text(body)
    with pytest.raises(ReplayError, match=message.replace("(", r"\(").replace(")", r"\)")):
        list(read_rows(path))


def test_cli_replay_writes_the_file_in_order(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(CSV)
    out = tmp_path / "out.tsv"
    assert main(["--replay", str(path), "--speed", "0", "--output", str(out), "--quiet"]) == 0
    lines = out.read_bytes().splitlines()
    trades = [parse_trade(line.split(b"\t")[2]) for line in lines if line.startswith(b"trades\t")]
    assert [t.event_time for t in trades] == [1735828200000, 1735828200500, 1735828200250,
                                              1735828201000, 1735828202000]
    assert len(lines) == 7  # 5 trades + 2 reference records


def test_cli_replay_errors_are_one_line(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("timestamp,symbol,price,size\n1735828200000,AAPL,abc,5\n")
    assert main(["--replay", str(path), "--speed", "0", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"generator: error: {path}:2: could not convert string to float: 'abc'"
    with pytest.raises(SystemExit) as exit_info:
        main(["--replay", str(tmp_path / "missing.csv"), "--output", "-"])
    assert exit_info.value.code == 2
    assert "replay file not found" in capsys.readouterr().err


def test_shipped_sample_is_reproducible_and_replays():
    assert SAMPLE.read_text() == sample_csv()
    trades = [t for _, t in read_rows(SAMPLE)]
    assert len(trades) == 300
    assert len({t["symbol"] for t in trades}) == 5
    times = [t["event_time"] for t in trades]
    assert times == sorted(times)


def test_replay_sharding_splits_symbols(tmp_path):
    symbols = [{e[3][-1][1] for e in replay_events(SAMPLE, 1, shard=(i, 2))} for i in range(2)]
    assert symbols[0] and symbols[1] and not symbols[0] & symbols[1]
    assert len(symbols[0] | symbols[1]) == 5
