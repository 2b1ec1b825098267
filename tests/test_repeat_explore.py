"""Repeat / explore metrics (DESIGN.md "Repeat and explore") against a plain-Python count:
a target is a repeat when its item is among the history items the model sees.

Both paths are checked: `evaluate()` (baselines) and the LightningModule's
validation / test (neural models), on random batches with ties, on groups that are
empty, and across split updates (the sums DDP gathers)."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from bench.datasets.datamodule import SequenceDataModule
from bench.datasets.prepare import prepare
from bench.evaluation import GroupedRankingMetrics, evaluate, repeat_mask
from bench.models.base import Baseline, DataSpec
from bench.training.module import SequenceTask
from tests.toy_models import LastItem

torch.set_num_threads(1)
KS = (1, 3, 10)
GROUPS = ("", "repeat_", "explore_")


# ------------------------------------------------------------------ the reference


def reference(batches, score_rows) -> dict[str, float]:
    """Metrics per group from loops over targets: rank from the definition, repeat from
    membership in the history (padding 0 excluded)."""
    ranked: dict[str, list[int]] = {group: [] for group in GROUPS}
    for batch, scores in zip(batches, score_rows, strict=True):
        for row, target in enumerate(batch["targets"].tolist()):
            s = scores[row]
            rank = 1 + sum(1 for j in range(1, len(s)) if j != target and s[j] >= s[target])
            history = [i for i in batch["items"][row].tolist() if i != 0]
            ranked[""].append(rank)
            ranked["repeat_" if target in history else "explore_"].append(rank)
    out = {}
    for group, ranks in ranked.items():
        n = len(ranks)
        out[f"{group}targets"] = float(n)
        for k in KS:
            hits = [r for r in ranks if r <= k]
            out[f"{group}hr@{k}"] = len(hits) / n if n else 0.0
            out[f"{group}mrr@{k}"] = sum(1 / r for r in hits) / n if n else 0.0
            out[f"{group}ndcg@{k}"] = sum(1 / math.log2(r + 1) for r in hits) / n if n else 0.0
    return out


def random_batches(n_items: int, seed: int, n_batches: int = 3, size: int = 7, width: int = 5):
    """Short histories over a small catalogue, so repeats and explores both occur."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        lengths = torch.randint(1, width + 1, (size,), generator=gen)
        items = torch.randint(1, n_items + 1, (size, width), generator=gen)
        items[torch.arange(width)[None, :] >= lengths[:, None]] = 0
        out.append(
            {
                "items": items,
                "behaviors": (items > 0).long(),
                "categories": torch.zeros_like(items),
                "gaps": torch.zeros_like(items),
                "lengths": lengths,
                "targets": torch.randint(1, n_items + 1, (size,), generator=gen),
            }
        )
    return out


def assert_matches(got: dict, want: dict, prefix: str = "") -> None:
    for key, value in want.items():
        assert float(got[prefix + key]) == pytest.approx(value, abs=1e-12), key
        if key.endswith("targets"):
            assert float(got[prefix + key]).is_integer()


# ------------------------------------------------------------------ tiny models


class RowScores(Baseline):
    """Integer scores from the history's items (ties everywhere), like a kNN baseline."""

    name, paper = "row_scores", "-"

    def __init__(self, n_items: int, seed: int = 0):
        super().__init__(None, DataSpec(n_items=n_items))
        gen = torch.Generator().manual_seed(seed)
        self.table = torch.randint(-2, 3, (n_items + 1, n_items + 1), generator=gen).float()

    def scores(self, batch):
        return self.table[batch["items"]].sum(1)


def trainer() -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )


def loader(batches) -> DataLoader:
    return DataLoader(batches, batch_size=None)  # the batches are already built


# ------------------------------------------------------------------ evaluate()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_groups_match_plain_python(seed):
    model = RowScores(n_items=12, seed=seed)
    batches = random_batches(12, seed)
    want = reference(batches, [model.scores(b).tolist() for b in batches])
    assert 0 < want["repeat_targets"] < want["targets"]  # both groups populated
    out = evaluate(model, batches, ks=KS, return_reciprocal_ranks=True)
    assert_matches(out, want)
    assert out["n_examples"] == out["targets"] == 21
    flags = [
        t in [i for i in b["items"][r].tolist() if i]
        for b in batches
        for r, t in enumerate(b["targets"].tolist())
    ]
    assert out["is_repeat"].tolist() == flags
    assert len(out["is_repeat"]) == len(out["reciprocal_ranks"])


def test_evaluate_empty_group_reports_zero_with_count_zero():
    model = RowScores(n_items=12)
    explore_only = random_batches(12, seed=3)
    for batch in explore_only:  # targets outside 1..6, histories inside
        batch["items"] = batch["items"] % 7
        batch["targets"] = 7 + batch["targets"] % 6
    out = evaluate(model, explore_only, ks=KS)
    assert out["repeat_targets"] == 0.0 and out["explore_targets"] == out["targets"] == 21
    assert all(out[f"repeat_{m}@{k}"] == 0.0 for m in ("hr", "mrr", "ndcg") for k in KS)
    assert_matches(out, reference(explore_only, [model.scores(b).tolist() for b in explore_only]))
    repeat_only = random_batches(12, seed=4)
    for batch in repeat_only:
        batch["targets"] = batch["items"][:, 0].clone()
    out = evaluate(model, repeat_only, ks=KS)
    assert out["explore_targets"] == 0.0 and out["explore_ndcg@10"] == 0.0
    assert out["repeat_ndcg@10"] == out["ndcg@10"]
    assert not any(math.isnan(v) for k, v in out.items() if isinstance(v, float))


def test_repeat_counts_what_the_model_sees_after_truncation(tmp_path):
    """Item 1 is in the sequence but falls out of a 3-event window: an explore target."""
    root = tmp_path / "data"
    (root / "custom").mkdir(parents=True)
    lines = ["1,2,3,4,5,9,1", "1,2,3,4,5,3,4", "6,7,8,6,9,6,9", "2,2,2,2,3,5,8"]
    (root / "custom" / "seqs.txt").write_text("\n".join(lines) + "\n")
    artifact = prepare(
        "custom",
        data_dir=root,
        cache_dir=tmp_path / "cache",
        adapter_options={"path": "seqs.txt", "format": "sequences"},
    )
    data = SequenceDataModule(artifact, max_len=3)
    batches = list(data.split_dataloader("test"))
    seen = [
        (int(t), [i for i in b["items"][r].tolist() if i])
        for b in batches
        for r, t in enumerate(b["targets"].tolist())
    ]
    assert len(seen) == len(lines) and all(len(h) == 3 for _, h in seen)
    flags = [t in h for t, h in seen]
    assert flags.count(True) and flags.count(False)  # both kinds on this file
    out = evaluate(RowScores(data.spec().n_items), batches, ks=KS, return_reciprocal_ranks=True)
    assert out["is_repeat"].tolist() == flags
    assert out["repeat_targets"] == flags.count(True)
    wide = list(SequenceDataModule(artifact, max_len=10).split_dataloader("test"))
    assert int(repeat_mask(wide[0]["items"], wide[0]["targets"]).sum()) > flags.count(True)


def test_split_updates_sum_to_one_pass():
    """Two metric states (two processes, or two batches) hold sums that add up exactly."""
    gen = torch.Generator().manual_seed(5)
    ranks = torch.randint(1, 40, (50,), generator=gen)
    is_repeat = torch.rand(50, generator=gen) < 0.4
    whole, first, second = (GroupedRankingMetrics(KS) for _ in range(3))
    whole.update(ranks, is_repeat)
    first.update(ranks[:17], is_repeat[:17])
    second.update(ranks[17:], is_repeat[17:])
    for group in ("all", "repeat", "explore"):
        parts = getattr(first, group), getattr(second, group)
        for state in ("hr", "mrr", "ndcg", "count"):
            total = getattr(parts[0], state) + getattr(parts[1], state)
            one_pass = getattr(getattr(whole, group), state)
            # counts and hits are exact; float sums differ at most in summation order
            assert torch.allclose(total, one_pass, rtol=1e-14, atol=0), (group, state)
            if state in ("hr", "count"):
                assert torch.equal(total, one_pass), (group, state)
        parts[0].merge_state(parts[1])
    merged = {k: float(v) for k, v in first.compute().items()}
    assert merged == pytest.approx({k: float(v) for k, v in whole.compute().items()}, abs=1e-12)
    assert merged["repeat_targets"] + merged["explore_targets"] == merged["targets"] == 50


# ------------------------------------------------------------------ LightningModule


def test_module_validate_and_test_report_groups_like_plain_python():
    spec = DataSpec(n_items=12)
    model = LastItem(spec, seed=1)
    task = SequenceTask(model, ks=KS)
    batches = random_batches(12, seed=6)
    with torch.no_grad():
        want = reference(batches, [model.scores(b).tolist() for b in batches])
    assert 0 < want["repeat_targets"] < want["targets"]
    valid = trainer().validate(task, dataloaders=loader(batches), verbose=False)[0]
    assert_matches(valid, want, prefix="val/")
    assert not any(k.startswith("val/sampled_") for k in valid)  # no negatives, no sampled keys
    test = trainer().test(task, dataloaders=loader(batches), verbose=False)[0]
    assert_matches(test, want, prefix="test/")
    flags = [
        t in b["items"][r].tolist() for b in batches for r, t in enumerate(b["targets"].tolist())
    ]
    assert task.test_is_repeat.dtype == bool and task.test_is_repeat.tolist() == flags
    assert len(task.test_reciprocal_ranks) == len(flags)


def test_module_empty_group_is_zero_not_nan():
    spec = DataSpec(n_items=12)
    task = SequenceTask(LastItem(spec), ks=KS)
    batches = random_batches(12, seed=7)
    for batch in batches:
        batch["targets"] = batch["items"][:, 0].clone()  # every target a repeat
    out = trainer().validate(task, dataloaders=loader(batches), verbose=False)[0]
    assert out["val/explore_targets"] == 0.0 and out["val/repeat_targets"] == 21.0
    assert all(out[f"val/explore_{m}@{k}"] == 0.0 for m in ("hr", "mrr", "ndcg") for k in KS)
    assert out["val/repeat_mrr@10"] == pytest.approx(out["val/mrr@10"])
