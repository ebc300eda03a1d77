"""The command line: help, one-line errors and exit codes, signals, Postgres reference upsert."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generator.cli import build_parser, main
from generator.model import build_universe
from generator.options import resolve
from generator.reference import UPSERT_SQL, write_symbols_to_postgres
from marketpulse.config import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_help_explains_every_option(capsys):
    parser = build_parser(load_settings())
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for action in parser._actions:
        assert action.help and len(action.help) > 10, action.option_strings
        for option in action.option_strings:
            assert option in text
    for option in ("--rate", "--seed", "--shard", "--late-fraction", "--bad-fraction", "--replay",
                   "--output", "--reference-to-postgres", "--compression", "--start-time"):
        assert option in text


@pytest.mark.parametrize("args, message", [
    (["--rate", "-5"], "argument --rate: must be >= 0: -5.0"),
    (["--shard", "3/3"], "argument --shard: shard '3/3': need n >= 1 and 0 <= i < n"),
    (["--bad-fraction", "1.5"], "argument --bad-fraction: must be between 0 and 1: 1.5"),
    (["--anomaly-kinds", "meteor"], "unknown kind(s) meteor"),
    (["--spike-pct", "50:5"], "need 0 < MIN <= MAX"),
    (["--start-time", "noon"], "not epoch ms or ISO 8601: 'noon'"),
    (["--symbols", "AAPL,AAPL", "--output", "-"], "ticker 'AAPL' given twice"),
    (["--clock", "wall", "--start-time", "0", "--output", "-"], "--start-time needs the simulated clock"),
])
def test_bad_values_are_one_line_and_exit_2(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_broker_down_is_one_line_and_exit_1(capsys):
    started = time.monotonic()
    code = main(["--bootstrap-servers", "127.0.0.1:1", "--wait-for-broker", "1", "--count", "1", "--quiet"])
    assert code == 1
    assert time.monotonic() - started < 15
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("generator: error: Kafka broker not reachable at 127.0.0.1:1 after 1s")


def test_sigterm_stops_cleanly_with_every_line_written(tmp_path):
    out = tmp_path / "out.tsv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "generator", "--rate", "500", "--output", str(out), "--progress-every", "0.1"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True)
    # Signal once the progress lines report more than 100 trades (the handler is installed by then).
    before = []
    for line in proc.stderr:
        before.append(line)
        progress = re.search(r"s  ([\d,]+) trades  ", line)
        if progress and int(progress[1].replace(",", "")) > 100:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    err = "".join(before) + err
    assert proc.returncode == 0, err
    assert "stopped on request" in err
    data = out.read_bytes()
    assert data.endswith(b"\n")
    trades = [line for line in data.splitlines() if line.startswith(b"trades\t")]
    reported = int(err.split("generator: ")[-1].split(" trades")[0].replace(",", ""))
    assert len(trades) == reported > 100


def test_wall_clock_mode_stamps_event_times_near_now(tmp_path):
    out = tmp_path / "out.tsv"
    before = int(time.time() * 1000)
    assert main(["--rate", "0", "--count", "2000", "--output", str(out), "--quiet"]) == 0
    after = int(time.time() * 1000)
    import json
    times = [json.loads(line.split(b"\t")[2])["event_time"] for line in out.read_bytes().splitlines()
             if line.startswith(b"trades\t")]
    assert len(times) == 2000 and all(before <= t <= after for t in times)


def test_paced_speed_and_event_rate_resolution():
    settings = load_settings()
    parser = build_parser(settings)
    plan = resolve(parser.parse_args(["--seed", "1", "--rate", "100"]), settings)
    assert plan.speed == 1.0 and plan.wall_start_ms is None
    args = parser.parse_args(["--seed", "1", "--rate", "100", "--event-rate", "1000"])
    assert resolve(args, settings).speed == 0.1  # 1,000 trades per event-time second, paced at 100 per wall s
    plan = resolve(parser.parse_args(["--rate", "0", "--duration", "3"]), settings, now_ms=lambda: 1234)
    assert plan.speed is None and plan.wall_duration_s == 3 and plan.wall_start_ms == 1234


class FakeCursor:
    def __init__(self, log):
        self.log = log

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def executemany(self, sql, rows):
        self.log.append((sql, list(rows)))


class FakeConnection:
    def __init__(self):
        self.log, self.commits = [], 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.commits += exc_type is None
        return False

    def cursor(self):
        return FakeCursor(self.log)


def test_write_symbols_to_postgres_upserts_all_in_one_transaction():
    conn = FakeConnection()
    specs = build_universe(["AAPL", "SYM0042"], seed=1)
    assert write_symbols_to_postgres(conn, specs) == 2
    assert conn.commits == 1
    (sql, rows), = conn.log
    assert sql == UPSERT_SQL and "ON CONFLICT (symbol) DO UPDATE" in sql
    assert rows[0] == ("AAPL", "Apple Inc.", "Technology", "NASDAQ", 230.0)
    assert rows[1][0] == "SYM0042" and rows[1][4] == specs[1].start_price


def test_module_entry_point_help_runs():
    proc = subprocess.run([sys.executable, "-m", "generator", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, env={**os.environ})
    assert proc.returncode == 0 and "--late-fraction" in proc.stdout
