"""Leakage: no valid / test event reaches any training input, filters are fitted on the
training window only, and augmentation happens after the split."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from bench.datasets import artifact
from bench.datasets.prepare import prepare
from bench.datasets.protocols import DataInfo, get_protocol
from bench.datasets.schema import TIMESTAMP, Behavior

torch.set_num_threads(1)

DATA = Path(
    os.environ.get("BENCH_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
needs_data = pytest.mark.skipif(
    not (DATA / "taobao" / "UserBehavior.csv").exists(), reason="real data sets not available"
)
D = 86400
SPLITS = ("train", "valid", "test")


def canonical(rows: list[tuple]) -> pl.LazyFrame:
    """(user, session, item, category, behavior, ts seconds) rows -> canonical LazyFrame."""
    names = ("user_id", "session_id", "item_id", "category_id", "behavior", "ts")
    df = pl.DataFrame(
        rows, schema=dict.fromkeys(names, pl.Int64) | {"behavior": pl.String}, orient="row"
    )
    return df.lazy().with_columns(
        pl.col("behavior").cast(Behavior), (pl.col("ts") * 1000).cast(TIMESTAMP)
    )


def build(name: str, rows: list[tuple], **params):
    proto = get_protocol(name)
    return proto.build(canonical(rows), proto.resolve(params), DataInfo("toy"))


def later_events_in_inputs(events: pl.DataFrame, examples: pl.DataFrame, code: int) -> int:
    """How many examples of split `code` see (as history or target) an event of a later split,
    or have a target outside their split; vectorised with prefix sums."""
    split = events["split"].to_numpy()
    later = np.concatenate([[0], np.cumsum(split > code)])
    pos = examples["pos"].to_numpy().astype(np.int64)
    start = examples["start"].to_numpy().astype(np.int64)
    bad = (later[pos + 1] - later[start]) > 0
    bad |= split[pos] != code
    bad |= start >= pos  # every example has a history
    return int(bad.sum())


REAL = [  # (data set, protocol, target, adapter options)
    ("taobao", "user-time", "any", None),
    ("taobao", "user-time", "buy", None),
    ("taobao", "session-time", "any", None),
    ("ml-100k", "user-time", "any", None),
    ("ml-100k", "user-loo", "any", None),
    ("diginetica", "session-srgnn", "any", None),
    ("diginetica", "session-time", "any", {"purchases": False}),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("leak-cache")


@needs_data
@pytest.mark.parametrize(("dataset", "protocol", "target", "options"), REAL)
def test_no_training_input_sees_a_later_event(cache, dataset, protocol, target, options):
    path = prepare(
        dataset, protocol, target=target, data_dir=DATA, cache_dir=cache, adapter_options=options
    )
    art = artifact.load(path)
    for code, split in enumerate(SPLITS):
        assert later_events_in_inputs(art.events, art.splits[split], code) == 0, split
    window = art.meta["info"].get("window") or art.meta["info"].get("days")
    if window:  # clock-time protocols: training inputs lie before the valid window
        valid_start = datetime.fromisoformat(window["valid_start"]).timestamp()
        ts = art.events["ts"].to_numpy()
        train = art.splits["train"]
        last = np.concatenate([[0], np.cumsum(ts >= valid_start)])
        pos, start = (train[c].to_numpy().astype(np.int64) for c in ("pos", "start"))
        assert ((last[pos + 1] - last[start]) == 0).all()
        test_start = datetime.fromisoformat(window["test_start"]).timestamp()
        test_pos = art.splits["test"]["pos"].to_numpy()
        if protocol == "user-time":  # targets are exactly the events of their window
            assert (ts[test_pos] >= test_start).all()


def test_item_support_is_counted_on_the_training_window_only():
    # item 1: 4 training events + 30 test events (support 4 < 5: out)
    # item 2: 5 training events (in); item 3: only in test, 30 times (out)
    rows = [(u, None, 1, 10, "pv", u * 60) for u in range(4)]
    rows += [
        (u, None, 2, 20, ("pv", "cart")[i % 2], u * 60 + i + 1) for u in range(1) for i in range(5)
    ]
    rows += [(u, None, 9, 90, "pv", 100 + u) for u in range(4)]  # padding item for history
    rows += [(u, None, 9, 90, "cart", 200 + u) for u in range(4)]
    for u in range(30):
        rows += [(u, None, 2, 20, "pv", 2 * D + u), (u, None, 1, 10, "pv", 2 * D + 40 + u)]
        rows += [(u, None, 3, 30, "pv", 2 * D + 80 + u)]
        rows += [(u, None, 2, 20, "pv", D + u), (u, None, 9, 90, "pv", D + 40 + u)]
    b = build("user-time", rows, min_item_support=5)
    assert b.items["raw_item"].to_list() == ["2", "9"]
    assert b.items["train_count"].to_list() == [5, 8]
    # categories are fitted on training events too: 10 and 30 never enter the vocabulary
    assert b.categories["raw_category"].to_list() == ["20", "90"]
    assert set(b.events["category"].to_list()) <= {1, 2}
    assert b.drops["item_unseen_in_train"] == 60  # items 1 and 3 in the test day
    assert b.drops["item_support_below_min_in_train"] == 4


def test_session_filters_see_training_sessions_only():
    # item 7 is frequent (6 events) only in test sessions; items 5 and 6 in training ones
    rows = []
    for s in range(6):
        rows += [(None, s, 5, 0, "pv", s * 3600), (None, s, 6, 0, "pv", s * 3600 + 1)]
    for s in range(6, 12):
        rows += [(None, s + 100, 5, 0, "pv", D + s), (None, s + 100, 6, 0, "pv", D + s + 1)]
        rows += [(None, s, t, 0, "pv", 2 * D + s * 60 + i) for i, t in enumerate((7, 5, 6))]
    b = build("session-time", rows, min_item_support=5)
    assert b.items["raw_item"].to_list() == ["5", "6"]
    assert b.drops["item_unseen_in_train"] == 6
    raw = b.items["raw_item"].to_list()
    test_items = b.events.filter(pl.col("split") == 2)["item"].to_list()
    assert [raw[i - 1] for i in test_items] == ["5", "6"] * 6
    assert b.examples["test"].height == 6


def test_augmentation_comes_after_the_split_and_sessions_are_never_cut():
    # one session spans the valid/test boundary: it goes whole to test, by its last event
    rows = [(None, 1, i % 3, 0, "pv", i * 60) for i in range(6)]  # train session
    rows += [(None, 2, i % 3, 0, "pv", D + i * 60) for i in range(4)]  # valid session
    rows += [(None, 3, i % 3, 0, "pv", 2 * D - 120 + i * 60) for i in range(5)]  # crosses
    b = build("session-time", rows, min_item_support=1)
    seq = b.events["seq"].to_numpy()
    split = b.events["split"].to_numpy()
    assert split.tolist() == [0] * 6 + [1] * 4 + [2] * 5
    counts = [b.examples[s].height for s in SPLITS]
    assert counts == [5, 3, 4]  # every prefix of every session, in its own part
    # train targets come only from training sessions
    assert set(split[b.examples["train"]["pos"].to_numpy()]) == {0}
    assert set(seq[b.examples["test"]["pos"].to_numpy()]) == {2}


def test_user_time_history_of_a_test_target_may_use_valid_events_but_train_never_does():
    rows = [(1, None, i % 2, 0, ("pv", "cart")[i % 2], i * 60) for i in range(10)]
    rows += [(1, None, 0, 0, "buy", D + 5), (1, None, 1, 0, "fav", 2 * D + 5)]
    b = build("user-time", rows, min_item_support=1)
    pos, start = b.examples["test"].row(0)
    assert b.events["split"][start:pos].to_list() == [0] * 10 + [1]
    for p, s in b.examples["train"].iter_rows():
        assert set(b.events["split"][s : p + 1].to_list()) == {0}


def test_the_leak_check_itself_catches_leaks():
    events = pl.DataFrame({"split": [0, 0, 1, 0, 2]}, schema={"split": pl.UInt8})
    clean = pl.DataFrame({"pos": [1, 3], "start": [0, 0]})
    assert later_events_in_inputs(events, clean.head(1), 0) == 0
    assert later_events_in_inputs(events, clean, 0) == 1  # a valid event in the history
    assert later_events_in_inputs(events, pl.DataFrame({"pos": [4], "start": [0]}), 1) == 1
    assert later_events_in_inputs(events, pl.DataFrame({"pos": [0], "start": [0]}), 0) == 1
