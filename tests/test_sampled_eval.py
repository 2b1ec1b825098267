"""Sampled metrics that run: an artifact prepared with `sampled_negatives` makes valid /
test batches carry the frozen negatives, and both evaluation paths (`evaluate()` for
baselines, SequenceTask for neural models) report `sampled_` metrics next to the
full-ranking ones, never instead of them."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import pytest
import torch

from bench.datasets.datamodule import SequenceDataModule
from bench.datasets.prepare import prepare
from bench.errors import DataError
from bench.evaluation import evaluate
from bench.models.base import Baseline, DataSpec
from bench.training.config import resolve
from bench.training.module import SequenceTask
from bench.training.run import execute
from tests.planted_runs import run_settings, write_planted
from tests.toy_models import LastItem

torch.set_num_threads(1)
KS = (1, 10, 20)
N_NEGATIVES = 20


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    """The real ml-100k (user-loo) prepared with 20 frozen negatives per valid/test example."""
    cache = tmp_path_factory.mktemp("cache")
    return prepare("ml-100k", params={"sampled_negatives": N_NEGATIVES}, cache_dir=cache)


def frozen(artifact, split: str) -> list[list[int]]:
    return pl.read_parquet(artifact / f"negatives_{split}.parquet")["negatives"].to_list()


def sampled_reference(batches, score_rows) -> dict[str, float]:
    """rank = 1 + the number of frozen negatives scoring >= the target, one at a time."""
    ranks = []
    for batch, scores in zip(batches, score_rows, strict=True):
        for row, target in enumerate(batch["targets"].tolist()):
            s = scores[row]
            negatives = batch["negatives"][row].tolist()
            ranks.append(1 + sum(1 for j in negatives if s[j] >= s[target]))
    n = len(ranks)
    out = {}
    for k in KS:
        hits = [r for r in ranks if r <= k]
        out[f"sampled_hr@{k}"] = len(hits) / n
        out[f"sampled_mrr@{k}"] = sum(1 / r for r in hits) / n
        out[f"sampled_ndcg@{k}"] = sum(1 / math.log2(r + 1) for r in hits) / n
    return out


class ItemSums(Baseline):
    """Integer scores from the history's items: many ties, as kNN baselines give."""

    name, paper = "item_sums", "-"

    def __init__(self, n_items: int):
        super().__init__(None, DataSpec(n_items=n_items))
        gen = torch.Generator().manual_seed(0)
        self.weights = torch.randint(-3, 4, (n_items + 1, 8), generator=gen).float()

    def scores(self, batch):
        return self.weights[batch["items"]].sum(1) @ self.weights.T


# ------------------------------------------------------------------ the DataModule


def test_valid_and_test_batches_carry_the_frozen_negatives(ml100k):
    data = SequenceDataModule(ml100k, eval_batch_size=300)
    for split in ("valid", "test"):
        served = [b["negatives"] for b in data.split_dataloader(split)]
        assert all(n.dtype == torch.long and n.size(1) == N_NEGATIVES for n in served)
        assert torch.cat(served).tolist() == frozen(ml100k, split)  # in the split's order
    assert "negatives" not in data.dataset("train").__getitems__([0, 1])
    plain = prepare("ml-100k", cache_dir=ml100k.parent.parent)
    assert "negatives" not in next(iter(SequenceDataModule(plain).split_dataloader("test")))


def test_negatives_that_do_not_fit_the_split_are_refused(ml100k, tmp_path):
    copy = tmp_path / "artifact"
    shutil.copytree(ml100k, copy)
    rows = pl.read_parquet(copy / "negatives_test.parquet")
    rows.head(rows.height - 1).write_parquet(copy / "negatives_test.parquet")
    with pytest.raises(DataError, match="negatives_test.parquet") as err:
        SequenceDataModule(copy).dataset("test")
    assert "rebuild" in str(err.value)


# ------------------------------------------------------------------ ranks and metrics


def test_evaluate_sampled_ranks_match_a_plain_count(ml100k):
    data = SequenceDataModule(ml100k, max_len=10, eval_batch_size=400)
    model = ItemSums(data.spec().n_items)
    batches = list(data.split_dataloader("test"))
    want = sampled_reference(batches, [model.scores(b).tolist() for b in batches])
    out = evaluate(model, batches, ks=KS)  # the batches carry negatives: sampled keys on top
    for key, value in want.items():
        assert out[key] == pytest.approx(value, abs=1e-12), key
    for k in KS:  # fewer competitors: never worse than the full ranking
        assert out[f"sampled_ndcg@{k}"] >= out[f"ndcg@{k}"] and out[f"hr@{k}"] < 1


def test_module_reports_sampled_metrics_next_to_full_ranking(ml100k):
    data = SequenceDataModule(ml100k, max_len=10, eval_batch_size=400)
    model = LastItem(data.spec(), seed=1)
    batches = list(data.split_dataloader("test"))
    with torch.no_grad():
        want = sampled_reference(batches, [model.scores(b).tolist() for b in batches])
    task = SequenceTask(model, ks=KS)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    test = trainer.test(task, datamodule=data, verbose=False)[0]
    for key, value in want.items():
        assert test[f"test/{key}"] == pytest.approx(value, abs=1e-12), key
    full = evaluate(model, batches, ks=KS, sampled=False)
    for key, value in full.items():
        if key != "n_examples":  # the full-ranking keys hold full-ranking values
            assert test[f"test/{key}"] == pytest.approx(value, abs=1e-12), key
    valid = trainer.validate(task, datamodule=data, verbose=False)[0]
    assert "val/sampled_ndcg@10" in valid and "val/ndcg@10" in valid


# ------------------------------------------------------------------ bench run


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    return write_planted(tmp_path_factory.mktemp("data"), n_seq=150, n_items=40, length=8)


def _run(planted_dir, tmp_path, model, assignments):
    quick = {"max_epochs": 1, "limit_train_batches": 2, "batch_size": 64, "threads": 1}
    run = run_settings(planted_dir, model, tmp_path / "runs", wandb=False, **quick)
    return execute(resolve({}, assignments, run), progress=False)


@pytest.mark.parametrize("model", ["gru4rec", "pop"])
def test_run_with_sampled_negatives_reports_both(planted_dir, tmp_path, model):
    sampled = _run(planted_dir, tmp_path, model, {"protocol.sampled_negatives": N_NEGATIVES})
    assert sampled["protocol_params"]["sampled_negatives"] == N_NEGATIVES
    for split in ("valid", "test"):
        values = sampled["metrics"][split]
        for k in (5, 10, 20, 50):
            assert values[f"sampled_ndcg@{k}"] >= values[f"ndcg@{k}"]
            assert values[f"sampled_hr@{k}"] >= values[f"hr@{k}"]
        assert values["sampled_hr@50"] == 1.0  # 20 negatives: every rank is <= 21
        assert values["repeat_targets"] + values["explore_targets"] == values["targets"]
    test = sampled["metrics"]["test"]
    assert "is_repeat" not in test  # per-target flags go to their own file, not the metrics
    flags = np.load(Path(sampled["run_dir"]) / sampled["test_repeat_file"])
    assert flags.dtype == bool and flags.sum() == test["repeat_targets"] > 0
    assert len(flags) == test["targets"]
    full = _run(planted_dir, tmp_path, model, {})
    assert not any(k.startswith("sampled_") for s in ("valid", "test") for k in full["metrics"][s])
    assert full["metrics"]["test"]["ndcg@10"] == pytest.approx(
        sampled["metrics"]["test"]["ndcg@10"]
    )
