"""session-srgnn reproduces SR-GNN's datasets/preprocess.py exactly on the Diginetica sample.

The reference below re-implements the published script step by step in plain Python (csv
module, dicts, stable sorts), with its quirks: a session's date is that of its last row in
file order, items are counted over all sessions (test included), sessions dated exactly on
the split date are in neither part, items are numbered in order of first appearance in
the date-sorted training sessions, and prefixes are augmented last-target-first.
(The script uses time.mktime on dates; calendar.timegm gives the same differences without
depending on the machine's time zone.)
"""

from __future__ import annotations

import calendar
import csv
import operator
import os
import time
from pathlib import Path

import pytest
import torch

from bench.datasets import artifact
from bench.datasets.prepare import prepare
from bench.errors import ConfigError

torch.set_num_threads(1)

DATA = Path(
    os.environ.get("BENCH_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
SAMPLE = DATA / "diginetica" / "sample_train-item-views.csv"
pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason="Diginetica sample not available")


def srgnn_reference(path: Path, test_days: int = 7) -> dict:
    """SR-GNN's preprocess.py (dataset 'sample' / 'diginetica'), with row counts per step."""
    steps = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter=";")
        sess_clicks: dict[str, list] = {}
        sess_date: dict[str, float] = {}
        curid, curdate = -1, None
        for data in reader:
            sessid = data["session_id"]
            if curdate and curid != sessid:
                sess_date[curid] = calendar.timegm(time.strptime(curdate, "%Y-%m-%d"))
            curid = sessid
            item = data["item_id"], int(data["timeframe"])
            curdate = data["eventdate"]
            sess_clicks.setdefault(sessid, []).append(item)
        sess_date[curid] = calendar.timegm(time.strptime(curdate, "%Y-%m-%d"))
        for i in list(sess_clicks):
            sorted_clicks = sorted(sess_clicks[i], key=operator.itemgetter(1))
            sess_clicks[i] = [c[0] for c in sorted_clicks]
    steps["rows"] = sum(len(s) for s in sess_clicks.values())

    # filter out length-1 sessions
    steps["session_of_length_1"] = 0
    for s in list(sess_clicks):
        if len(sess_clicks[s]) == 1:
            steps["session_of_length_1"] += 1
            del sess_clicks[s]
            del sess_date[s]

    # items seen fewer than 5 times (over all sessions) go; sessions left shorter than 2 go
    iid_counts: dict[str, int] = {}
    for s in sess_clicks:
        for iid in sess_clicks[s]:
            iid_counts[iid] = iid_counts.get(iid, 0) + 1
    steps["item_support_below_min"] = steps["session_shorter_than_2"] = 0
    for s in list(sess_clicks):
        curseq = sess_clicks[s]
        filseq = [i for i in curseq if iid_counts[i] >= 5]
        steps["item_support_below_min"] += len(curseq) - len(filseq)
        if len(filseq) < 2:
            steps["session_shorter_than_2"] += len(filseq)
            del sess_clicks[s]
            del sess_date[s]
        else:
            sess_clicks[s] = filseq

    # split by date
    dates = list(sess_date.items())
    maxdate = dates[0][1]
    for _, date in dates:
        if maxdate < date:
            maxdate = date
    splitdate = maxdate - 86400 * test_days
    steps["session_on_split_date"] = sum(len(sess_clicks[s]) for s, d in dates if d == splitdate)
    tra_sess = sorted(filter(lambda x: x[1] < splitdate, dates), key=operator.itemgetter(1))
    tes_sess = sorted(filter(lambda x: x[1] > splitdate, dates), key=operator.itemgetter(1))

    item_dict: dict[str, int] = {}
    train_seqs = []
    for s, _ in tra_sess:
        outseq = []
        for i in sess_clicks[s]:
            if i not in item_dict:
                item_dict[i] = len(item_dict) + 1
            outseq.append(item_dict[i])
        train_seqs.append(outseq)
    steps["item_unseen_in_train"] = 0
    steps["test_rows"] = sum(len(sess_clicks[s]) for s, _ in tes_sess)
    test_seqs = []
    for s, _ in tes_sess:
        outseq = [item_dict[i] for i in sess_clicks[s] if i in item_dict]
        steps["item_unseen_in_train"] += len(sess_clicks[s]) - len(outseq)
        if len(outseq) < 2:
            steps["session_shorter_than_2"] += len(outseq)
            continue
        test_seqs.append(outseq)

    def process_seqs(iseqs):
        out_seqs, labs, ids = [], [], []
        for sid, seq in enumerate(iseqs):
            for i in range(1, len(seq)):
                labs.append(seq[-i])
                out_seqs.append(seq[:-i])
                ids.append(sid)
        return out_seqs, labs, ids

    return {
        "train": process_seqs(train_seqs),
        "test": process_seqs(test_seqs),
        "train_seqs": train_seqs,
        "test_seqs": test_seqs,
        "item_dict": item_dict,
        "steps": steps,
        "split_date": splitdate,
    }


@pytest.fixture(scope="module")
def reference():
    return srgnn_reference(SAMPLE)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("srgnn-cache")


def stored(art, split: str) -> tuple[list[list[int]], list[int]]:
    """(histories, targets) of a split, full histories, in the stored example order."""
    item = art.events["item"].to_list()
    rows = art.splits[split].rows()
    return [item[s:p] for p, s in rows], [item[p] for p, s in rows]


def test_reference_reproduces_the_published_intermediate_facts(reference):
    # The data README: 933 sessions of the sample have one event.
    assert reference["steps"]["session_of_length_1"] == 933
    assert reference["steps"]["rows"] == 12_391


def test_train_and_test_are_exactly_srgnn_with_valid_fraction_zero(reference, cache):
    path = prepare(
        "diginetica",
        "session-srgnn",
        params={"valid_fraction": 0.0},
        data_dir=DATA,
        cache_dir=cache,
    )
    art = artifact.load(path)
    tr_seqs, tr_labs, _ = reference["train"]
    te_seqs, te_labs, _ = reference["test"]
    assert stored(art, "train") == (tr_seqs, tr_labs)
    assert stored(art, "test") == (te_seqs, te_labs)
    assert art.splits["valid"].height == 0
    # item numbering is SR-GNN's item_dict
    numbering = dict(zip(art.items["raw_item"], art.items["item"], strict=True))
    assert numbering == reference["item_dict"]
    # whole sequences, in SR-GNN's session order (train first, then test)
    events = art.events
    seqs = [g["item"].to_list() for _, g in events.group_by("seq", maintain_order=True)]
    assert seqs == reference["train_seqs"] + reference["test_seqs"]


def test_drops_match_each_step_of_the_script(reference, cache):
    path = prepare("diginetica", "session-srgnn", data_dir=DATA, cache_dir=cache)
    meta = artifact.read_meta(path)
    steps = reference["steps"]
    drops = meta["drops"]
    for reason in (
        "item_support_below_min",
        "session_shorter_than_2",
        "session_on_split_date",
        "item_unseen_in_train",
    ):
        assert drops.get(reason, 0) == steps[reason], reason
    singles = drops["session_of_length_1"]
    assert singles == steps["session_of_length_1"]  # one row each
    # with the sample, the adapter reads views only (SR-GNN reads views only too)
    assert drops.get("not_a_view", 0) == 0
    kept = meta["counts"]["total"]["events"]
    assert kept == sum(map(len, reference["train_seqs"])) + sum(map(len, reference["test_seqs"]))
    assert meta["info"]["split_date"].startswith("2016-05-25")
    assert meta["target_drop_fraction"]["test"] == pytest.approx(
        steps["item_unseen_in_train"] / steps["test_rows"]
    )


def test_default_valid_holds_out_the_latest_training_sessions(reference, cache):
    art = artifact.load(prepare("diginetica", "session-srgnn", data_dir=DATA, cache_dir=cache))
    tr_seqs, tr_labs, tr_ids = reference["train"]
    train, valid = stored(art, "train"), stored(art, "valid")
    # train then valid is SR-GNN's training set, example for example, in its order
    assert (train[0] + valid[0], train[1] + valid[1]) == (tr_seqs, tr_labs)
    n_sessions = len(reference["train_seqs"])
    n_valid = int(n_sessions * 0.1)
    assert len(set(tr_ids[len(train[0]) :])) == n_valid
    assert set(tr_ids[: len(train[0])]).isdisjoint(tr_ids[len(train[0]) :])
    # valid sessions are whole and marked valid in the events table
    seq = art.events["seq"].to_numpy()
    split = art.events["split"].to_numpy()
    held = (seq >= n_sessions - n_valid) & (seq < n_sessions)
    assert set(split[held]) == {1}
    assert set(split[seq < n_sessions - n_valid]) == {0}
    assert set(split[seq >= n_sessions]) == {2}
    assert stored(art, "test") == reference["test"][:2]


def test_train_portion_keeps_the_latest_examples_like_yoochoose_1_64(reference, cache):
    path = prepare(
        "diginetica",
        "session-srgnn",
        params={"train_portion": 4, "valid_fraction": 0.0},
        data_dir=DATA,
        cache_dir=cache,
    )
    art = artifact.load(path)
    tr_seqs, tr_labs, _ = reference["train"]
    keep = int(len(tr_seqs) / 4)
    assert stored(art, "train") == (tr_seqs[-keep:], tr_labs[-keep:])
    assert art.items.height == len(reference["item_dict"])  # vocabulary unchanged


def test_buy_targets_are_refused(cache):
    with pytest.raises(ConfigError) as err:
        prepare("diginetica", "session-srgnn", target="buy", data_dir=DATA, cache_dir=cache)
    assert "session-time" in err.value.hint
