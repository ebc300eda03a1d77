"""The generated stream, through the CLI's --output file: determinism, sharding, schema validity, and ground
truth labels that match exactly what was injected."""

import collections
import hashlib
import json

import jsonschema
import pytest

from generator.cli import main
from generator.model import MEDIAN_SIZE
from marketpulse.trade import SCHEMA_PATH, InvalidTrade, Trade, parse_trade

SCHEMA = json.loads(SCHEMA_PATH.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
# A busy, messy stream on the simulated clock: 13 symbols (the defaults plus synthetic ones).
MESSY = ["--universe", "13", "--event-rate", "400", "--rate", "0", "--anomaly-rate", "0.01",
         "--late-fraction", "0.05", "--max-delay-ms", "3000", "--bad-fraction", "0.01"]


def produce(tmp_path, *args: str, name: str = "out.tsv") -> bytes:
    path = tmp_path / name
    assert main([*args, "--output", str(path), "--quiet"]) == 0
    return path.read_bytes()


def messages(data: bytes) -> list[tuple[str, bytes, bytes]]:
    out = []
    for line in data.splitlines():
        topic, key, value = line.split(b"\t")
        out.append((topic.decode(), key, value))
    return out


def of_topic(msgs, topic):
    return [(k, v) for t, k, v in msgs if t == topic]


def labels(msgs, kind=None):
    found = [json.loads(v) for t, _, v in msgs if t == "trades.injected"]
    return [rec for rec in found if kind is None or rec["kind"] == kind]


# --- determinism ---------------------------------------------------------------------------------------

def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    args = ["--seed", "11", "--count", "5000", *MESSY]
    first = produce(tmp_path, *args, name="a.tsv")
    second = produce(tmp_path, *args, name="b.tsv")
    other = produce(tmp_path, *["--seed", "12", "--count", "5000", *MESSY], name="c.tsv")
    assert first == second
    assert len(messages(first)) > 5000
    assert of_topic(messages(first), "trades") != of_topic(messages(other), "trades")
    # Not even one trade value in common (trade ids carry a seed-derived run token).
    assert not set(of_topic(messages(first), "trades")) & set(of_topic(messages(other), "trades"))


def test_seeded_run_uses_the_simulated_clock_from_the_start_time(tmp_path):
    iso = produce(tmp_path, "--seed", "3", "--count", "300", "--start-time", "2024-03-01T10:00:00Z",
                  name="iso.tsv")
    ms = produce(tmp_path, "--seed", "3", "--count", "300", "--start-time", "1709287200000", name="ms.tsv")
    assert iso == ms
    times = [json.loads(v)["event_time"] for _, v in of_topic(messages(iso), "trades")]
    assert 1709287200000 <= times[0] < 1709287200000 + 1000
    assert times == sorted(times)  # no late trades requested: event time never goes back
    # 300 trades at 200/s (the config rate): about 1.5 s of event time.
    assert 1709287200000 + 1000 < times[-1] < 1709287200000 + 2500


def test_injection_options_do_not_change_the_underlying_price_path(tmp_path):
    plain = of_topic(messages(produce(tmp_path, "--seed", "8", "--duration", "5", "--rate", "0",
                                      name="plain.tsv")), "trades")
    messy = messages(produce(tmp_path, "--seed", "8", "--duration", "5", "--rate", "0",
                             "--bad-fraction", "0.05", "--anomaly-rate", "0.02", name="messy.tsv"))
    touched = {rec["trade_id"] for rec in labels(messy)}
    untouched = set()
    for _, value in of_topic(messy, "trades"):
        try:
            if parse_trade(value).trade_id not in touched:
                untouched.add(value)
        except InvalidTrade:
            pass
    assert len(of_topic(messy, "trades")) == len(plain)
    assert untouched and untouched <= {v for _, v in plain}
    assert len(plain) - len(untouched) == len(touched)


# --- sharding ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 5])
def test_shards_split_the_single_stream_exactly(tmp_path, n):
    args = ["--seed", "21", "--duration", "10", *MESSY]
    single = messages(produce(tmp_path, *args, name="single.tsv"))
    shards = [messages(produce(tmp_path, *args, "--shard", f"{i}/{n}", name=f"s{i}.tsv")) for i in range(n)]

    assert collections.Counter(single) == collections.Counter(m for shard in shards for m in shard)
    owners = collections.defaultdict(set)
    for i, shard in enumerate(shards):
        for _, key, _ in shard:
            owners[key].add(i)
    assert all(len(o) == 1 for o in owners.values())  # no symbol in two shards
    assert len(owners) == 13
    # Symbol at universe index j lives in shard j % n; per-symbol order is the single stream's order.
    tickers = [json.loads(v)["symbol"] for _, v in of_topic(single, "symbols")]
    for j, ticker in enumerate(tickers):
        key = ticker.encode()
        assert owners[key] == {j % n}
        assert [m for m in single if m[1] == key] == [m for m in shards[j % n] if m[1] == key]


def test_shard_from_the_environment(tmp_path, monkeypatch):
    args = ["--seed", "2", "--duration", "3", "--rate", "0"]
    flag = produce(tmp_path, *args, "--shard", "1/3", name="flag.tsv")
    monkeypatch.setenv("MARKETPULSE_GENERATOR_SHARD", "1/3")
    env = produce(tmp_path, *args, name="env.tsv")
    assert flag == env
    assert {k for _, k, _ in messages(env)} == {b"GOOGL", b"TSLA", b"JPM"}  # indexes 1, 4, 7 of ten


# --- record contract ---------------------------------------------------------------------------------

def test_every_good_trade_validates_and_is_canonical_json(tmp_path):
    msgs = messages(produce(tmp_path, "--seed", "4", "--count", "20000", *MESSY))
    bad_sha1 = {rec["payload_sha1"] for rec in labels(msgs, "bad")}
    checked = 0
    ids = set()
    for key, value in of_topic(msgs, "trades"):
        try:
            trade = parse_trade(value)
        except InvalidTrade:
            assert hashlib.sha1(value).hexdigest() in bad_sha1
            continue
        VALIDATOR.validate(json.loads(value))
        assert trade.to_json().encode() == value  # same bytes as the contract's own serialisation
        assert key == trade.symbol.encode()
        assert trade.price == round(trade.price, 2)
        ids.add(trade.trade_id)
        checked += 1
    assert checked == 20000 - len(bad_sha1) and len(bad_sha1) > 100
    assert len(ids) == checked  # trade ids are unique


def test_reference_records_carry_company_sector_exchange(tmp_path):
    msgs = messages(produce(tmp_path, "--seed", "1", "--count", "1", "--symbols", "AAPL,ZZTOP,SYM0099"))
    ref = {k.decode(): json.loads(v) for k, v in of_topic(msgs, "symbols")}
    assert list(ref) == ["AAPL", "ZZTOP", "SYM0099"]
    assert ref["AAPL"] == {"symbol": "AAPL", "company": "Apple Inc.", "sector": "Technology",
                           "exchange": "NASDAQ", "start_price": 230.0, "volatility": 0.25}
    for rec in ref.values():
        assert set(rec) == {"symbol", "company", "sector", "exchange", "start_price", "volatility"}
        assert rec["company"] and rec["sector"] and rec["exchange"] in ("NASDAQ", "NYSE")
        assert rec["start_price"] > 0 and 0 < rec["volatility"] < 1
    # Seeded by (seed, symbol): ZZTOP's reference does not depend on the other symbols.
    alone = messages(produce(tmp_path, "--seed", "1", "--count", "1", "--symbols", "ZZTOP", name="z.tsv"))
    zztop = json.dumps(ref["ZZTOP"], separators=(",", ":")).encode()
    assert of_topic(alone, "symbols") == [(b"ZZTOP", zztop)]


# --- ground truth --------------------------------------------------------------------------------------

def test_every_nth_trade_of_each_symbol_is_labelled_and_is_the_anomaly(tmp_path):
    msgs = messages(produce(tmp_path, "--seed", "9", "--count", "20000", "--rate", "0",
                            "--anomaly-every", "50", "--bad-fraction", "0.01"))
    trades = {}
    for _, value in of_topic(msgs, "trades"):
        try:
            trade = parse_trade(value)
        except InvalidTrade:
            continue
        trades[trade.trade_id] = trade
    bad_ids = {rec["trade_id"] for rec in labels(msgs, "bad")}
    expected = {tid for tid in trades if int(tid.rsplit("-", 1)[1]) % 50 == 0}
    anomalies = [rec for rec in labels(msgs) if rec["kind"] != "bad"]
    assert {rec["trade_id"] for rec in anomalies} == expected
    assert len(anomalies) == len(expected) > 300
    assert not expected & bad_ids
    for rec in anomalies:
        trade = trades[rec["trade_id"]]
        assert (rec["symbol"], rec["event_time"]) == (trade.symbol, trade.event_time)
        if rec["kind"] == "volume_spike":
            assert trade.size == rec["size"] == max(2, int(rec["model_size"] * rec["magnitude"] + 0.5))
            assert 300 <= rec["magnitude"] <= 1000
            assert rec["model_size"] == MEDIAN_SIZE  # times the usual size, not the trade's own random draw
        else:
            assert trade.price == rec["price"]
            assert rec["price"] / rec["model_price"] - 1 == pytest.approx(rec["magnitude"], abs=0.01 / 50)
            assert 0.05 <= abs(rec["magnitude"]) <= 0.5
            assert (rec["magnitude"] > 0) == (rec["kind"] == "price_spike")


def test_price_anomalies_are_exactly_the_trades_off_the_model_price(tmp_path):
    msgs = messages(produce(tmp_path, "--seed", "10", "--count", "30000", "--rate", "0",
                            "--anomaly-rate", "0.01", "--anomaly-kinds", "price_spike,price_crash"))
    labelled = {rec["trade_id"] for rec in labels(msgs)}
    last_normal: dict[str, float] = {}
    off_model = set()
    for _, value in of_topic(msgs, "trades"):
        trade = parse_trade(value)
        previous = last_normal.get(trade.symbol)
        if previous is not None and abs(trade.price / previous - 1) > 0.04:
            off_model.add(trade.trade_id)
            continue  # one trade only: the next one is compared with the last price on the model
        last_normal[trade.symbol] = trade.price
    assert len(labelled) > 200
    # A first trade of a symbol cannot be compared; none of those is off the model at this seed.
    assert off_model == labelled


def test_late_labels_match_the_held_back_trades(tmp_path):
    msgs = messages(produce(tmp_path, "--seed", "12", "--count", "20000", "--rate", "0",
                            "--late-fraction", "0.05", "--max-delay-ms", "2000"))
    late = {rec["trade_id"]: rec for rec in labels(msgs, "late")}
    assert all(rec["magnitude"] == rec["delay_ms"] and 1 <= rec["delay_ms"] <= 2000 for rec in late.values())
    order = [parse_trade(v) for _, v in of_topic(msgs, "trades")]
    position = {t.trade_id: i for i, t in enumerate(order)}
    # A label follows its trade directly.
    flat = [json.loads(v) for t, _, v in msgs if t != "symbols"]
    for i, rec in enumerate(flat):
        if rec.get("kind") == "late":
            assert flat[i - 1]["trade_id"] == rec["trade_id"]
    # Out-of-order trades (some earlier trade has a later event time) are all labelled late...
    high = -1
    out_of_order = set()
    for trade in order:
        if trade.event_time < high:
            out_of_order.add(trade.trade_id)
        high = max(high, trade.event_time)
    assert out_of_order <= set(late)
    assert len(out_of_order) > 0.9 * len(late) > 800
    # ... and each late trade sits exactly where its delay puts it among the on-time trades.
    on_time = [t for t in order if t.trade_id not in late]
    for tid, rec in late.items():
        release = rec["event_time"] + rec["delay_ms"]
        before = [t.event_time for t in on_time if position[t.trade_id] < position[tid]]
        after = [t.event_time for t in on_time if position[t.trade_id] > position[tid]]
        assert not before or max(before) <= release
        assert not after or min(after) >= release
        if len(late) > 50:
            break  # the quadratic check on the first 50 is enough
    assert len(late) == sum(1 for rec in labels(msgs) if rec["kind"] == "late")


def test_bad_records_all_fail_parsing_are_unique_and_labelled(tmp_path):
    msgs = messages(produce(tmp_path, "--seed", "13", "--count", "20000", "--rate", "0",
                            "--bad-fraction", "0.05"))
    failing = {}
    for _, value in of_topic(msgs, "trades"):
        try:
            parse_trade(value)
        except InvalidTrade as err:
            failing[value] = str(err)
    bad = labels(msgs, "bad")
    assert len(bad) == len(failing) > 800
    assert len({rec["payload_sha1"] for rec in bad}) == len(bad)  # every payload unique
    assert {rec["payload_sha1"] for rec in bad} == {hashlib.sha1(v).hexdigest() for v in failing}
    by_sha = {hashlib.sha1(v).hexdigest(): (v, reason) for v, reason in failing.items()}
    kinds = collections.Counter()
    for rec in bad:
        value, reason = by_sha[rec["payload_sha1"]]
        assert rec["reason"] == reason
        assert rec["trade_id"].encode() in value
        kinds[rec["bad_kind"]] += 1
    assert set(kinds) == {"malformed_json", "missing_field", "negative_price", "invalid_symbol", "bad_side"}
    assert sum(1 for r in failing.values() if r.startswith("malformed JSON")) == kinds["malformed_json"]


def test_trade_record_matches_the_contract_dataclass():
    trade = Trade("AAPL-abc123-1", "AAPL", 230.01, 100, "BUY", 1735828200000)
    from generator.model import build_universe
    from generator.stream import StreamOptions, generate

    opts = StreamOptions(universe=build_universe(["AAPL"], 1), seed=1, start_ms=1735828200000,
                         event_rate=10, run="abc123")
    _, _, _, msgs = next(iter(generate(opts)))
    produced = parse_trade(msgs[0][2])
    assert produced.trade_id == "AAPL-abc123-1" and produced.to_json().encode() == msgs[0][2]
    assert trade.to_json().startswith('{"trade_id":')


def test_volume_surges_labelled_per_trade_one_sided_sizes_scaled_prices_untouched(tmp_path):
    """--surge-rate through the CLI: every trade of an episode is labelled volume_surge_flat with its
    episode, is on the episode's side, has size = round(drawn size x factor), and the price path (every
    trade's price) is exactly the stream without surges."""
    common = ["--symbols", "AAPL,V", "--seed", "5", "--event-rate", "20", "--rate", "0", "--duration", "3600"]
    plain_msgs = messages(produce(tmp_path, *common, name="a.tsv"))
    plain = [parse_trade(v) for _k, v in of_topic(plain_msgs, "trades")]
    surged_msgs = messages(produce(tmp_path, *common, "--surge-rate", "3", name="b.tsv"))
    surged = [parse_trade(v) for _k, v in of_topic(surged_msgs, "trades")]
    assert [(t.trade_id, t.price, t.event_time) for t in surged] == \
        [(t.trade_id, t.price, t.event_time) for t in plain]
    surge_labels = labels(surged_msgs, "volume_surge_flat")
    by_id = {label["trade_id"]: label for label in surge_labels}
    episodes = collections.defaultdict(list)
    for before, after in zip(plain, surged, strict=True):
        label = by_id.get(after.trade_id)
        if label is None:
            assert (after.size, after.side) == (before.size, before.side)
            continue
        episodes[label["episode"]].append(label)
        assert (label["model_size"], label["size"]) == (before.size, after.size)
        assert after.size == max(1, int(before.size * label["magnitude"] + 0.5))
        assert after.side == label["side"] and label["symbol"] == after.symbol
    # Poisson at 3 per symbol-hour over 2 symbol-hours; each episode one side, one factor in [3, 5], its
    # trades within 60 s of its first, which names it.
    assert len(episodes) == 5
    for episode, members in episodes.items():
        assert members[0]["trade_id"] == episode
        assert len({(m["side"], m["magnitude"]) for m in members}) == 1 and 3 <= members[0]["magnitude"] <= 5
        assert members[-1]["event_time"] - members[0]["event_time"] < 60_000
