"""Protocols: registry and parameters, exact recipes on small frames, and exact counts on the
real Taobao, Diginetica and MovieLens files against independent plain-Python computations
(csv module, dicts, sorted lists; no Polars)."""

from __future__ import annotations

import calendar
import csv
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from bench.datasets import artifact
from bench.datasets.prepare import prepare
from bench.datasets.protocols import DataInfo, get_protocol, list_protocols, recipe_hash
from bench.datasets.protocols.negatives import sample_negatives
from bench.datasets.schema import BEHAVIOR_INDEX, TIMESTAMP, Behavior
from bench.errors import ConfigError, DataError

torch.set_num_threads(1)

DATA = Path(
    os.environ.get("BENCH_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
TAOBAO = DATA / "taobao" / "UserBehavior.csv"
DIGINETICA = DATA / "diginetica"
ML100K = DATA / "ml-100k" / "ml-100k.inter"
needs_data = pytest.mark.skipif(not TAOBAO.exists(), reason="real data sets not available")

# Taobao's official window in UTC+8, in Unix seconds
T_START, T_END = 1511539200, 1512316800  # 2017-11-25 00:00 .. 2017-12-04 00:00 (+08)
T_TEST = T_END - 86400
T_VALID = T_TEST - 86400


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def canonical(rows: list[tuple]) -> pl.LazyFrame:
    """(user, session, item, category, behavior, ts seconds) rows -> canonical LazyFrame."""
    df = pl.DataFrame(
        rows,
        schema={
            "user_id": pl.Int64,
            "session_id": pl.Int64,
            "item_id": pl.Int64,
            "category_id": pl.Int64,
            "behavior": pl.String,
            "ts": pl.Int64,
        },
        orient="row",
    )
    return df.lazy().with_columns(
        pl.col("behavior").cast(Behavior), (pl.col("ts") * 1000).cast(TIMESTAMP)
    )


def build(name: str, rows: list[tuple], has_time: bool = True, **params):
    proto = get_protocol(name)
    return proto.build(canonical(rows), proto.resolve(params), DataInfo("toy", has_time))


def histories(built_or_art, split: str) -> list[tuple[int, list[int], int]]:
    """(seq, history items, target item) of every example of a split, as stored."""
    events = built_or_art.events
    examples = getattr(built_or_art, "examples", None) or built_or_art.splits
    seq, item = events["seq"].to_list(), events["item"].to_list()
    return [(seq[p], item[s:p], item[p]) for p, s in examples[split].iter_rows()]


# ---------------------------------------------------------------- registry and parameters


def test_registry_lists_the_four_protocols_and_rejects_unknown_names():
    assert set(list_protocols()) == {"user-time", "user-loo", "session-time", "session-srgnn"}
    with pytest.raises(ConfigError) as err:
        get_protocol("user-tim")
    assert err.value.option == "--protocol"
    assert "user-time" in err.value.hint and "session-srgnn" in err.value.hint


def test_unknown_or_bad_parameters_name_the_option_and_the_choices():
    proto = get_protocol("user-time")
    with pytest.raises(ConfigError) as err:
        proto.resolve({"min_support": 3})
    assert "min_support" in err.value.message and "min_item_support" in err.value.hint
    with pytest.raises(ConfigError) as err:
        proto.resolve({"min_item_support": 0})
    assert "min_item_support" in err.value.option
    with pytest.raises(ConfigError) as err:
        proto.resolve({"target": "click"})
    assert "target" in err.value.option
    with pytest.raises(ConfigError):
        get_protocol("user-time").build(
            canonical([(1, None, 1, 1, "pv", 0)]), proto.resolve({"tz": "Mars/Base"}), DataInfo("x")
        )


def test_every_parameter_changes_the_hash_and_defaults_layer_correctly():
    proto = get_protocol("session-time")
    base = recipe_hash(proto, proto.resolve({}), "d")
    seen = {base}
    for change in (
        {"test_days": 2},
        {"min_item_support": 3},
        {"session_gap_minutes": 10},
        {"target": "buy"},
        {"max_len": 20},
        {"sampled_negatives": 5},
    ):
        seen.add(recipe_hash(proto, proto.resolve(change), "d"))
    seen.add(recipe_hash(proto, proto.resolve({}), "other-dataset"))
    seen.add(recipe_hash(proto, proto.resolve({}), "d", {"purchases": False}))
    assert len(seen) == 9
    # recipe's data-set defaults < adapter defaults < the user's parameters
    assert proto.resolve({}, dataset="diginetica").test_days == 7
    assert proto.resolve({}, dataset="diginetica", adapter_defaults={"test_days": 3}).test_days == 3
    assert proto.resolve({"test_days": 2}, dataset="diginetica").test_days == 2


def test_clock_time_protocols_refuse_data_without_time_and_name_user_loo(cache):
    for name in ("user-time", "session-time", "session-srgnn"):
        with pytest.raises(ConfigError) as err:
            get_protocol(name).check_data(DataInfo("seqs", has_time=False))
        assert "user-loo" in err.value.hint
    get_protocol("user-loo").check_data(DataInfo("seqs", has_time=False))


@needs_data
def test_prepare_uses_the_adapter_default_protocol_and_rejects_unknown_ones(cache):
    path = prepare("taobao", data_dir=DATA, cache_dir=cache)
    assert artifact.read_meta(path)["protocol"] == "user-time"
    assert path.parent == cache / "taobao" and path.name.startswith("user-time-")
    with pytest.raises(ConfigError):
        prepare("taobao", "leave-one-out", data_dir=DATA, cache_dir=cache)
    with pytest.raises(ConfigError):
        prepare("taobao", params={"window": 3}, data_dir=DATA, cache_dir=cache)
    with pytest.raises(ConfigError) as err:
        prepare("diginetica-dynamicrec", "session-time", data_dir=DATA, cache_dir=cache)
    assert "user-loo" in err.value.hint


# ---------------------------------------------------------------- user-time, small frames

D = 86400


def test_user_time_recipe_on_a_small_frame():
    rows = [
        # user 7: out-of-window row, a collapsed repeat, a rare item, then valid/test events
        (7, None, 99, 1, "pv", -5),  # before window_start: dropped
        (7, None, 10, 1, "pv", 0),
        (7, None, 10, 1, "pv", 5),  # consecutive repeat of (10, pv): collapsed
        (7, None, 10, 1, "cart", 6),  # same item, other behaviour: kept
        (7, None, 55, 2, "pv", 7),  # support 1 in train: dropped
        (7, None, 11, 1, "pv", 10),
        (7, None, 12, 2, "buy", D + 1),  # valid day
        (7, None, 77, 3, "pv", D + 2),  # frequent only in test/valid: unseen in train
        (7, None, 11, 1, "pv", 2 * D + 3),  # test day
        # user 3: single test event (no history: not a target), ties by file order
        (3, None, 11, 1, "pv", 2 * D + 9),
        (3, None, 12, 2, "pv", 2 * D + 9),
        (5, None, 10, 1, "pv", 1),
        (5, None, 11, 1, "pv", 1),
        (5, None, 12, 2, "pv", 2),
        (5, None, 12, 2, "fav", 3),
    ] + [(9, None, 77, 3, ("pv", "cart")[i % 2], D + 100 + i) for i in range(6)]
    b = build(
        "user-time",
        rows,
        window_start="1970-01-01T00:00:00+00:00",
        min_item_support=2,
    )
    assert b.drops == {
        "outside_window": 1,
        "consecutive_repeat": 1,
        "item_support_below_min_in_train": 1,
        "item_unseen_in_train": 7,
    }
    raw = dict(zip(b.items["item"], b.items["raw_item"], strict=True))
    assert sorted(raw.values()) == ["10", "11", "12"]
    events = [
        (s, raw[i], bh, ts, sp)
        for s, i, bh, ts, sp in b.events.select("seq", "item", "behavior", "ts", "split").rows()
    ]
    pv, fav, cart, buy = (BEHAVIOR_INDEX[k] for k in ("pv", "fav", "cart", "buy"))
    assert events == [
        (0, "10", pv, 0, 0),
        (0, "10", cart, 6, 0),
        (0, "11", pv, 10, 0),
        (0, "12", buy, D + 1, 1),
        (0, "11", pv, 2 * D + 3, 2),
        (1, "11", pv, 2 * D + 9, 2),  # user 3: first appearance before user 5
        (1, "12", pv, 2 * D + 9, 2),
        (2, "10", pv, 1, 0),
        (2, "11", pv, 1, 0),
        (2, "12", pv, 2, 0),
        (2, "12", fav, 3, 0),
    ]
    assert b.examples["train"]["pos"].to_list() == [1, 2, 8, 9, 10]
    assert b.examples["valid"].rows() == [(3, 0)]
    assert b.examples["test"].rows() == [(4, 0), (6, 5)]
    assert b.items["train_count"].to_list() == [3, 2, 2]  # 10: pv, cart, pv(user 5)
    # 7 of the 9 valid/test events had items unseen in training
    assert b.info["target_drop_fraction"] == {"valid": 7 / 8, "test": 0.0}


def test_user_time_days_follow_the_time_zone():
    shanghai_midnight = 1512144000  # 2017-12-02 00:00 +08:00 = 2017-12-01 16:00 UTC
    rows = [(1, None, 1, 1, "pv", shanghai_midnight - 3600 * 30 + i) for i in range(3)]
    rows += [(1, None, 1, 1, "fav", shanghai_midnight - 1)]  # still train in +08
    rows += [(1, None, 1, 1, "pv", shanghai_midnight)]  # valid
    rows += [(1, None, 1, 1, "cart", shanghai_midnight + D + 5)]  # test
    b = build("user-time", rows, tz="Asia/Shanghai", min_item_support=1, collapse_repeats=False)
    assert b.events["split"].to_list() == [0, 0, 0, 0, 1, 2]
    assert b.info["window"]["test_start"] == "2017-12-03T00:00:00+08:00"
    utc = build("user-time", rows, tz="UTC", min_item_support=1, collapse_repeats=False)
    assert utc.events["split"].to_list() == [0, 0, 0, 1, 1, 2]


def test_buy_target_restricts_valid_and_test_and_optionally_train():
    rows = [(1, None, i % 3, 0, "buy" if i % 2 else "pv", i * 3600) for i in range(60)]
    rows += [(1, None, 1, 0, "pv", 2 * D + 10), (1, None, 2, 0, "buy", 2 * D + 20)]
    rows += [(1, None, 1, 0, "pv", 3 * D + 10), (1, None, 2, 0, "buy", 3 * D + 20)]
    rows += [(1, None, 1, 0, "pv", 3 * D + 30)]
    b = build("user-time", rows, target="buy", min_item_support=1)
    behavior = b.events["behavior"].to_numpy()
    for split in ("train", "valid", "test"):
        pos = b.examples[split]["pos"].to_numpy()
        assert len(pos) and (behavior[pos] == BEHAVIOR_INDEX["buy"]).all()
    assert b.examples["test"].height == 1
    loose = build(
        "user-time", rows, target="buy", min_item_support=1, restrict_train_to_target=False
    )
    assert loose.examples["train"].height > b.examples["train"].height
    assert loose.examples["valid"].height == b.examples["valid"].height


def test_filtered_away_is_a_data_error_naming_the_parameter():
    rows = [(1, None, i, 0, "pv", i * 600) for i in range(10)] + [
        (1, None, 1, 0, "pv", 2 * D + 5),
        (1, None, 2, 0, "pv", 3 * D + 5),
    ]
    with pytest.raises(DataError) as err:
        build("user-time", rows, min_item_support=50)
    assert "min_item_support" in err.value.option
    with pytest.raises(DataError) as err:
        build("user-time", rows, window_start="2030-01-01", window_end="2030-02-01")
    assert "window" in err.value.option
    with pytest.raises(DataError) as err:
        build("session-time", rows, min_item_support=50)
    assert "min_item_support" in err.value.option
    with pytest.raises(DataError) as err:
        build("user-loo", rows, min_seq_length=100)
    assert "min_seq_length" in err.value.option
    with pytest.raises(DataError) as err:  # test window holds no target
        build("user-time", rows[:10], min_item_support=1)
    assert "test_days" in err.value.hint or "valid_days" in err.value.hint


# ---------------------------------------------------------------- user-loo, session-time


def test_user_loo_parts_follow_recbole_leave_one_out():
    rows = [(1, None, 10 + i, 0, "pv", 100 - i) for i in range(4)]  # reversed in time
    rows += [(2, None, 20, 0, "pv", 5), (2, None, 21, 0, "pv", 5)]  # tie: file order
    rows += [(3, None, 30, 0, "pv", 1)]  # a single event: train, no example
    rows += [(4, None, 40 + i, 0, "pv", i) for i in range(3)]  # 3 events: no valid target
    b = build("user-loo", rows)
    raw = b.items["raw_item"].to_list()
    seqs = [(s, [raw[i - 1] for i in h], raw[t - 1]) for s, h, t in histories(b, "test")]
    assert seqs == [(0, ["13", "12", "11"], "10"), (3, ["40", "41"], "42")]
    assert [(s, [raw[i - 1] for i in h]) for s, h, _ in histories(b, "valid")] == [
        (0, ["13", "12"])
    ]
    # RecBole leaves out min(2, k - 1) of k = n - 1 examples: 2 events only train
    assert b.events["split"].to_list() == [0, 0, 1, 2, 0, 0, 0, 0, 0, 2]
    assert b.examples["train"]["pos"].to_list() == [1, 5, 8]
    assert b.items.height == 10  # every item, RecBole style


def test_user_loo_without_time_uses_line_order():
    rows = [(1, None, i, 0, "pv", None) for i in (5, 3, 9, 7)]
    b = build("user-loo", rows, has_time=False)
    assert b.events["ts"].to_list() == [0, 1, 2, 3]
    assert histories(b, "test") == [(0, [2, 1, 4], 3)]  # raw 5, 3, 9 -> 7 (sorted ids)


def test_session_time_cuts_at_the_gap_and_assigns_sessions_by_their_last_event():
    gap = 30 * 60
    rows = [
        (1, None, 1, 0, "pv", 0),
        (1, None, 2, 0, "pv", gap),  # exactly the gap: same session
        (1, None, 1, 0, "pv", 2 * gap + 1),  # more than the gap: new session
        (1, None, 2, 0, "pv", 2 * gap + 2),
        (2, None, 1, 0, "pv", D - 60),  # crosses midnight into the valid day
        (2, None, 2, 0, "pv", D + 60),
        (2, None, 1, 0, "pv", 2 * D + 60),  # test session (after a long gap)
        (2, None, 2, 0, "pv", 2 * D + 70),
    ]
    b = build("session-time", rows, min_item_support=1)
    assert b.info["sessions"] == {"given": 0, "cut": 4}
    assert b.events["seq"].to_list() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert b.events["split"].to_list() == [0, 0, 0, 0, 1, 1, 2, 2]
    assert [e.height for e in b.examples.values()] == [2, 1, 1]


# ---------------------------------------------------------------- sampled negatives


def test_sampled_negatives_are_distinct_never_the_target_and_seeded():
    for n_items, k in ((30, 20), (1_000_000, 50)):  # random keys; rejection
        targets = np.arange(1, 501) % n_items + 1
        neg = sample_negatives(targets, n_items, k, seed=3, split_code=1)
        assert neg.shape == (500, k) and neg.min() >= 1 and neg.max() <= n_items
        assert not (neg == targets[:, None]).any()
        assert all(len(set(row)) == k for row in neg.tolist())
        assert (neg == sample_negatives(targets, n_items, k, seed=3, split_code=1)).all()
        assert not (neg == sample_negatives(targets, n_items, k, seed=4, split_code=1)).all()
    with pytest.raises(ConfigError):
        sample_negatives(targets, 10, 10, seed=0, split_code=1)


@needs_data
def test_prepare_freezes_negatives_per_valid_and_test_example(cache):
    path = prepare(
        "ml-100k", "user-loo", params={"sampled_negatives": 20}, data_dir=DATA, cache_dir=cache
    )
    art = artifact.load(path)
    assert set(art.negatives) == {"valid", "test"}
    for split in ("valid", "test"):
        neg = np.array(art.negatives[split]["negatives"].to_list())
        targets = art.events["item"].to_numpy()[art.splits[split]["pos"].to_numpy()]
        assert neg.shape == (art.splits[split].height, 20)
        assert not (neg == targets[:, None]).any()


# ---------------------------------------------------------------- real data, exact counts


def read_taobao() -> list[tuple]:
    with open(TAOBAO, newline="") as f:
        return [(r[0], r[1], r[2], r[3], int(r[4]), line) for line, r in enumerate(csv.reader(f))]


def user_time_reference(rows, start, end, valid_start, test_start, min_support, target="any"):
    """Plain-Python user-time: per user (first appearance) the kept events and the examples."""
    inside = [r for r in rows if start <= r[4] < end]
    users: dict[str, list] = {}
    for r in inside:
        users.setdefault(r[0], []).append(r)
    support: dict[str, int] = {}
    split_of = {}
    for u, seq in users.items():
        seq.sort(key=lambda r: (r[4], r[5]))
        collapsed = []
        for r in seq:
            if collapsed and (collapsed[-1][1], collapsed[-1][3]) == (r[1], r[3]):
                continue
            collapsed.append(r)
        users[u] = collapsed
        for r in collapsed:
            split_of[r[5]] = 0 if r[4] < valid_start else 1 if r[4] < test_start else 2
            if split_of[r[5]] == 0:
                support[r[1]] = support.get(r[1], 0) + 1
    vocab = {i for i, c in support.items() if c >= min_support}
    first_category: dict[str, str] = {}
    for seq in users.values():
        for r in seq:
            if split_of[r[5]] == 0 and r[1] in vocab:
                first_category.setdefault(r[1], (r[4], r[5], r[2]))
    item_info = sorted(
        (int(i), first_category[i][2], support[i])
        for i in vocab  # numbered by raw id (Taobao ids are integers)
    )
    events, examples = [], {0: [], 1: [], 2: []}
    dropped = {0: 0, 1: 0, 2: 0}
    candidates = {1: 0, 2: 0}
    seq_no = 0
    for seq in users.values():
        for r in seq:
            sp = split_of[r[5]]
            if sp and (target == "any" or r[3] == "buy"):
                candidates[sp] += 1
            if r[1] not in vocab:
                dropped[sp] += 1
        kept = [r for r in seq if r[1] in vocab]
        if not kept:
            continue
        for i, r in enumerate(kept):
            sp = split_of[r[5]]
            events.append((seq_no, r[1], r[3], r[4], sp))
            if i and (target == "any" or r[3] == "buy"):
                examples[sp].append((seq_no, i))
        seq_no += 1
    return events, examples, dropped, candidates, len(rows) - len(inside), item_info


def artifact_events(art) -> list[tuple]:
    raw = art.items["raw_item"].to_list()
    names = {v: k for k, v in BEHAVIOR_INDEX.items()}
    return [
        (s, raw[i - 1], names[b], ts, sp)
        for s, i, b, ts, sp in art.events.select("seq", "item", "behavior", "ts", "split").rows()
    ]


def artifact_examples(art) -> dict[int, list[tuple[int, int]]]:
    seq = art.events["seq"].to_list()
    return {
        code: sorted((seq[p], p - s) for p, s in art.splits[name].iter_rows())
        for code, name in enumerate(("train", "valid", "test"))
    }


@needs_data
@pytest.mark.parametrize("target", ["any", "buy"])
def test_user_time_on_taobao_matches_plain_python(cache, target):
    path = prepare("taobao", "user-time", target=target, data_dir=DATA, cache_dir=cache)
    art = artifact.load(path)
    events, examples, dropped, candidates, outside, item_info = user_time_reference(
        read_taobao(), T_START, T_END, T_VALID, T_TEST, 5, target
    )
    assert artifact_events(art) == events
    cats = art.categories["raw_category"].to_list()
    stored_items = [
        (int(raw), cats[c - 1], n)
        for raw, c, n in art.items.select("raw_item", "category", "train_count").rows()
    ]
    assert stored_items == item_info
    assert artifact_examples(art) == {k: sorted(v) for k, v in examples.items()}
    meta = art.meta
    assert meta["drops"]["outside_window"] == outside == 35
    assert meta["drops"]["item_support_below_min_in_train"] == dropped[0]
    assert meta["drops"]["item_unseen_in_train"] == dropped[1] + dropped[2]
    assert meta["counts"]["test"]["examples"] == len(examples[2])
    assert meta["info"]["window"]["test_start"] == "2017-12-03T00:00:00+08:00"
    if target == "any":
        assert meta["drops"].get("consecutive_repeat", 0) == 0  # the sample has none
        assert len(examples[2]) == 401
        assert meta["target_drop_fraction"] == pytest.approx(
            {"valid": dropped[1] / candidates[1], "test": dropped[2] / candidates[2]}
        )


def read_ml100k() -> list[tuple]:
    with open(ML100K, newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader)
        return [(r[0], r[1], "0", "pv", int(float(r[3])), line) for line, r in enumerate(reader)]


@needs_data
def test_user_loo_on_ml100k_matches_plain_python(cache):
    art = artifact.load(prepare("ml-100k", "user-loo", data_dir=DATA, cache_dir=cache))
    users: dict[str, list] = {}
    for r in read_ml100k():
        users.setdefault(r[0], []).append(r)
    events, examples = [], {0: [], 1: [], 2: []}
    for s, seq in enumerate(users.values()):
        seq.sort(key=lambda r: (r[4], r[5]))
        n = len(seq)
        for i, r in enumerate(seq):
            sp = 2 if (n >= 3 and i == n - 1) else 1 if (n >= 4 and i == n - 2) else 0
            events.append((s, r[1], "pv", r[4], sp))
            if i:
                examples[sp].append((s, i))
    assert artifact_events(art) == events
    assert artifact_examples(art) == examples
    assert art.meta["counts"]["test"]["examples"] == 943
    assert art.meta["counts"]["train"]["examples"] == 100_000 - 3 * 943
    assert art.meta["n_items"] == 1682 and art.meta["drops"] == {}


def session_time_reference(rows, gap_s, test_days, valid_days, min_support, min_len=2):
    """rows: (session or None, user, item, category, ts_ms, line). Plain-Python session-time."""
    sessions: dict = {}
    for r in rows:
        if r[0] is not None:
            sessions.setdefault(("s", r[0]), []).append(r)
    by_user: dict = {}
    for r in rows:
        if r[0] is None:
            by_user.setdefault(r[1], []).append(r)
    for key in list(sessions):
        sessions[key].sort(key=lambda r: (r[4], r[5]))
    cut = 0
    for user, seq in by_user.items():
        seq.sort(key=lambda r: (r[4], r[5]))
        for i, r in enumerate(seq):
            if i and r[4] - seq[i - 1][4] > gap_s * 1000:
                cut += 1
            sessions.setdefault(("u", user, cut), []).append(r)
        cut += 1
    last_ms = max(r[4] for r in rows)
    last_day = datetime.fromtimestamp(last_ms / 1000, UTC).date()
    end = calendar.timegm(last_day.timetuple()) * 1000 + 86400_000
    test_start = end - test_days * 86400_000
    valid_start = test_start - valid_days * 86400_000

    def part(seq):
        last = max(r[4] for r in seq)
        return 0 if last < valid_start else 1 if last < test_start else 2

    parts = {k: part(v) for k, v in sessions.items() if len(v) >= min_len}
    support: dict = {}
    for k, p in parts.items():
        if p == 0:
            for r in sessions[k]:
                support[r[2]] = support.get(r[2], 0) + 1
    kept = {}
    for k, p in parts.items():
        if p == 0:
            seq = [r for r in sessions[k] if support[r[2]] >= min_support]
            if len(seq) >= min_len:
                kept[k] = seq
    vocab = {r[2] for seq in kept.values() for r in seq}
    unseen, total = {1: 0, 2: 0}, {1: 0, 2: 0}
    for code in (1, 2):
        for k, p in parts.items():
            if p == code:
                seq = [r for r in sessions[k] if r[2] in vocab]
                unseen[code] += len(sessions[k]) - len(seq)
                total[code] += len(sessions[k])
                if len(seq) >= min_len:
                    kept[k] = seq
    events, examples = [], {0: [], 1: [], 2: []}
    for s, (k, seq) in enumerate(kept.items()):
        for i, r in enumerate(seq):
            events.append((s, r[2], r[3], r[4] // 1000, parts[k]))
            if i:
                examples[parts[k]].append((s, i))
    drop_fraction = {"valid": unseen[1] / total[1], "test": unseen[2] / total[2]}
    return events, examples, drop_fraction


def artifact_session_events(art) -> list[tuple]:
    raw = art.items["raw_item"].to_list()
    cats = [None, *art.categories["raw_category"].to_list()]
    return [
        (s, raw[i - 1], cats[c], ts, sp)
        for s, i, c, ts, sp in art.events.select("seq", "item", "category", "ts", "split").rows()
    ]


@needs_data
def test_session_time_on_taobao_cuts_sessions_like_plain_python(cache):
    art = artifact.load(prepare("taobao", "session-time", data_dir=DATA, cache_dir=cache))
    rows = [(None, u, i, c, ts * 1000, line) for u, i, c, _, ts, line in read_taobao()]
    events, examples, drop_fraction = session_time_reference(rows, 30 * 60, 1, 1, 5)
    # categories outside training sessions are unknown (0 -> None)
    train_cats = {e[2] for e in events if e[4] == 0}
    events = [(s, i, c if c in train_cats else None, ts, sp) for s, i, c, ts, sp in events]
    assert artifact_session_events(art) == events
    assert artifact_examples(art) == examples
    assert art.meta["counts"]["train"]["examples"] == len(examples[0])
    assert art.meta["target_drop_fraction"] == pytest.approx(drop_fraction)


@needs_data
def test_session_time_on_diginetica_matches_plain_python(cache):
    path = prepare(
        "diginetica",
        "session-time",
        data_dir=DATA,
        cache_dir=cache,
        adapter_options={"purchases": False},
    )
    art = artifact.load(path)
    with open(DIGINETICA / "product-categories.csv", newline="") as f:
        reader = csv.reader(f, delimiter=";")
        next(reader)
        category = dict(reader)
    rows = []
    with open(DIGINETICA / "sample_train-item-views.csv", newline="") as f:
        reader = csv.DictReader(f, delimiter=";")
        for line, r in enumerate(reader):
            day = calendar.timegm(datetime.strptime(r["eventdate"], "%Y-%m-%d").timetuple())
            ts = day * 1000 + int(r["timeframe"])
            rows.append(
                (r["session_id"], r["user_id"], r["item_id"], category[r["item_id"]], ts, line)
            )
    events, examples, _ = session_time_reference(rows, 30 * 60, 7, 7, 5)
    train_cats = {e[2] for e in events if e[4] == 0}
    events = [(s, i, c if c in train_cats else None, ts, sp) for s, i, c, ts, sp in events]
    assert artifact_session_events(art) == events
    assert artifact_examples(art) == examples
    assert [art.meta["counts"][s]["examples"] for s in ("train", "valid", "test")] == [
        len(examples[c]) for c in range(3)
    ]


# ---------------------------------------------------------------- shared steps


def test_split_counts_are_exact_on_a_tiny_table():
    from bench.datasets.protocols.counts import split_counts

    events = pl.DataFrame(
        {
            "seq": [0, 0, 0, 1, 1, 2, 2],
            "item": [1, 2, 1, 3, 2, 2, 4],
            "behavior": [1, 1, 4, 1, 3, 1, 1],
            "category": [1, 0, 1, 2, 0, 0, 3],
            "ts": [0] * 7,
            "split": [0, 0, 1, 0, 2, 0, 2],
        }
    )
    examples = {
        "train": pl.DataFrame({"pos": [1], "start": [0]}),
        "valid": pl.DataFrame({"pos": [2], "start": [0]}),
        "test": pl.DataFrame({"pos": [4, 6], "start": [3, 5]}),
    }
    counts = split_counts(events, examples, n_categories=3)
    assert counts["train"] == {
        "examples": 1, "sequences": 1, "events": 4, "items": 3, "categories": 2,
        "target_items": 1,
    }  # fmt: skip
    assert counts["test"] == {
        "examples": 2, "sequences": 2, "events": 2, "items": 2, "categories": 1,
        "target_items": 2,
    }  # fmt: skip
    assert counts["total"] == {"events": 7, "sequences": 3, "items": 4, "categories": 3}
    assert counts["behaviors"] == {"pv": 5, "fav": 0, "cart": 1, "buy": 1}


def test_sequences_follow_first_appearance_whether_or_not_the_file_is_grouped():
    from bench.datasets.protocols.examples import order_sequences

    grouped = pl.DataFrame({"key": [5, 5, 2, 2, 9], "ts": [1, 2, 1, 1, 0], "n": range(5)})
    assert order_sequences(grouped)["n"].to_list() == [0, 1, 2, 3, 4]  # returned as is
    mixed = pl.DataFrame({"key": [5, 2, 5, 9, 2], "ts": [2, 1, 1, 0, 1], "n": range(5)})
    assert order_sequences(mixed)["n"].to_list() == [2, 0, 1, 4, 3]
    assert order_sequences(mixed, by_time=False)["n"].to_list() == [0, 2, 1, 4, 3]


def test_string_ids_are_remapped_through_the_hash_path():
    rows = [("u1", "b", "x", "pv", 0), ("u1", "a", "y", "pv", 60), ("u1", "b", "x", "cart", D + 1)]
    rows += [
        ("u1", "a", "z", "pv", 2 * D + 1),
        ("u2", "c", None, "pv", 5),
        ("u2", "a", "y", "pv", 6),
    ]
    df = pl.DataFrame(
        rows, schema=["user_id", "item_id", "category_id", "behavior", "ts"], orient="row"
    )
    frame = df.lazy().select(
        "user_id",
        pl.lit(None, dtype=pl.String).alias("session_id"),
        "item_id",
        "category_id",
        pl.col("behavior").cast(Behavior),
        (pl.col("ts") * 1000).cast(TIMESTAMP),
    )
    proto = get_protocol("user-time")
    b = proto.build(frame, proto.resolve({"min_item_support": 1}), DataInfo("strings"))
    assert b.items["raw_item"].to_list() == ["a", "b", "c"]
    assert b.categories["raw_category"].to_list() == ["x", "y"]
    assert b.events["item"].to_list() == [2, 1, 2, 1, 3, 1]
    assert b.events["category"].to_list() == [1, 2, 1, 0, 0, 2]  # z: only in test
