"""user-loo splits as RecBole 1.2.1 (`LS: valid_and_test`, order `TO`) does: its n - 1
prefix examples per user lose min(2, n - 2) to test and valid, so 2-event sequences only
train and 3-event ones have no valid target. Counts by hand, and RecBole's own counts on
diginetica-dynamicrec."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bench.datasets import artifact
from bench.datasets.prepare import prepare

torch.set_num_threads(1)

DATA = Path(
    os.environ.get("BENCH_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
DYNAMICREC = DATA / "diginetica-dynamicrec"
ML100K = DATA / "ml-100k"


def _counts(folder: Path) -> dict[str, int]:
    meta = artifact.load(folder).meta
    return {split: meta["counts"][split]["examples"] for split in ("train", "valid", "test")}


def test_sequences_of_length_one_to_six_split_as_recbole(tmp_path):
    # line k holds k items: 1 -> nothing; 2 -> train; 3 -> train + test;
    # 4 -> train, valid, test; 5 -> 2 train; 6 -> 3 train (+ valid, test each)
    lines = [",".join(str(10 * k + i) for i in range(k)) for k in range(1, 7)]
    (tmp_path / "diginetica.csv").write_text("\n".join(lines) + "\n")
    folder = prepare(
        "diginetica-dynamicrec", "user-loo", data_dir=tmp_path, cache_dir=tmp_path / "cache"
    )
    assert _counts(folder) == {"train": 1 + 1 + 1 + 2 + 3, "valid": 3, "test": 4}
    art = artifact.load(folder)
    seq = art.events["seq"].to_list()
    length = {s: seq.count(s) for s in set(seq)}
    test_lengths = sorted(length[seq[p]] for p in art.splits["test"]["pos"].to_list())
    valid_lengths = sorted(length[seq[p]] for p in art.splits["valid"]["pos"].to_list())
    assert test_lengths == [3, 4, 5, 6] and valid_lengths == [4, 5, 6]
    # the test target is the last event, the valid target the one before, their
    # histories every earlier event of the line
    for split, back in (("test", 1), ("valid", 2)):
        for pos, start in art.splits[split].iter_rows():
            assert pos == max(i for i, s in enumerate(seq) if s == seq[pos]) - back + 1
            assert start == seq.index(seq[pos])


@pytest.mark.skipif(not DYNAMICREC.exists(), reason="diginetica-dynamicrec not available")
def test_diginetica_dynamicrec_counts_equal_recboles(tmp_path):
    folder = prepare("diginetica-dynamicrec", "user-loo", data_dir=DYNAMICREC, cache_dir=tmp_path)
    counts = _counts(folder)
    assert counts["test"] == 68_793 and counts["valid"] == 66_720


@pytest.mark.skipif(not ML100K.exists(), reason="ml-100k not available")
def test_ml100k_every_user_keeps_a_valid_and_a_test_target(tmp_path):
    counts = _counts(prepare("ml-100k", "user-loo", data_dir=ML100K, cache_dir=tmp_path))
    assert counts == {"train": 100_000 - 3 * 943, "valid": 943, "test": 943}
