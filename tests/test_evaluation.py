"""Golden ranks (ties, padding, exclusion), chunked == full, top-k, sampled, `evaluate`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from bench.errors import ConfigError, DataError
from bench.evaluation import (
    RankingMetrics,
    chunked_ranks,
    chunked_topk,
    evaluate,
    ranks_from_scores,
    sampled_ranks,
)
from bench.models.base import Baseline, DataSpec, HistoryEmbedding, ModelConfig, SequenceModel

torch.set_num_threads(1)
NAN, INF = math.nan, math.inf
METRICS = ("hr", "mrr", "ndcg")


def rank_of(row: list[float], target: int, exclude: list[int] | None = None) -> int:
    scores = torch.tensor([row])
    ex = None if exclude is None else torch.tensor([exclude])
    return int(ranks_from_scores(scores, torch.tensor([target]), ex)[0])


# ----------------------------------------------------------------- golden ranks


def test_hand_ranks_with_ties_and_padding():
    #       pad  1    2    3    4    5
    row = [9.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    assert [rank_of(row, t) for t in (1, 2, 3, 4, 5)] == [1, 2, 3, 4, 5]
    assert rank_of([0.0, 1.0, 3.0, 3.0, 2.0], 2) == 2  # tie with one other -> 2
    assert rank_of([0.0, 1.0, 3.0, 3.0, 2.0], 3) == 2
    assert rank_of([0.0, 3.0, 3.0, 3.0, 2.0], 2) == 3  # tie with two others
    assert rank_of([0.0, 7.0, 7.0, 7.0, 7.0], 1) == 4  # all equal -> last (N), never first
    assert rank_of([100.0, 1.0, 2.0], 2) == 1  # the padding column never counts


def test_hand_ranks_with_exclusion():
    row = [0.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    assert rank_of(row, 4, exclude=[1, 3, 0]) == 2  # items 1 and 3 removed
    assert rank_of(row, 4, exclude=[4, 1, 0]) == 3  # the target itself is never removed
    assert rank_of(row, 4, exclude=[1, 1, 1]) == 3  # duplicates remove once
    assert rank_of(row, 4, exclude=[5, 0, 0]) == 4  # removing a worse item changes nothing
    assert rank_of(row, 4, exclude=[0, 0, 0]) == 4


def test_nan_scores_never_win():
    assert rank_of([0.0, NAN, 1.0, 2.0], 1) == 3  # NaN target ranks last
    assert rank_of([0.0, NAN, NAN, NAN], 2) == 3  # all NaN: all tie, last
    assert rank_of([0.0, NAN, 1.0, 2.0], 2) == 2  # a NaN other does not outscore
    assert rank_of([0.0, -INF, 1.0, INF], 3) == 1  # infinities stay infinities
    assert rank_of([0.0, -INF, 1.0, INF], 1) == 3


def test_batch_rows_are_independent_and_targets_checked():
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 3.0, 2.0, 1.0]])
    assert ranks_from_scores(scores, torch.tensor([1, 1])).tolist() == [3, 1]
    with pytest.raises(ValueError, match="1..3"):
        ranks_from_scores(scores, torch.tensor([0, 1]))  # 0 is padding, never a target
    with pytest.raises(ValueError, match="1..3"):
        ranks_from_scores(scores, torch.tensor([4, 1]))


# ---------------------------------------------------------------------- chunked


def reference_rank(scores: list[int], target: int, exclude: set[int]) -> int:
    """Straight from the definition, one item at a time (test-only)."""
    return 1 + sum(
        1
        for j in range(1, len(scores))
        if j != target and j not in exclude and scores[j] >= scores[target]
    )


@pytest.mark.parametrize("chunk", [1, 2, 5, 16, 40, 41, 1000])
def test_chunked_exact_on_integer_data(chunk):
    """Small integer embeddings: every product is exact, ties are everywhere."""
    gen = torch.Generator().manual_seed(1)
    b, n, d = 9, 40, 4
    hidden = torch.randint(-2, 3, (b, d), generator=gen)
    table = torch.randint(-2, 3, (n + 1, d), generator=gen)
    hidden[0] = 0  # every score equal -> rank N
    targets = torch.randint(1, n + 1, (b,), generator=gen)
    exclude = torch.randint(0, n + 1, (b, 6), generator=gen)
    exclude[1, 0] = targets[1]
    exact = (hidden @ table.T).tolist()  # int64, exact
    for ex in (None, exclude):
        expected = [
            reference_rank(exact[i], int(targets[i]), set() if ex is None else set(ex[i].tolist()))
            for i in range(b)
        ]
        got = chunked_ranks(hidden.float(), table.float(), targets, ex, chunk_items=chunk)
        assert got.tolist() == expected
        full = ranks_from_scores(hidden.float() @ table.float().T, targets, ex)
        assert full.tolist() == expected
        if ex is None:
            assert expected[0] == n


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 299, 300, 301, 4096])
def test_chunked_equals_full_with_forced_float_ties(chunk):
    """Random floats; table rows copied from target rows so exact ties must count.

    Taking the target score from a separately shaped product, e.g.
    `(hidden * table[targets]).sum(1)`, differs in the last bit here and gets ranks wrong.
    """
    gen = torch.Generator().manual_seed(0)
    b, n, d = 37, 300, 64
    hidden = torch.randn(b, d, generator=gen)
    table = torch.randn(n + 1, d, generator=gen)
    targets = torch.randint(1, n + 1, (b,), generator=gen)
    table[torch.randint(1, n + 1, (b,), generator=gen)] = table[targets]  # duplicates
    table[0] = table[targets[0]]  # padding row ties with a target: must not count
    hidden[3] = 0.0
    exclude = torch.randint(0, n + 1, (b, 10), generator=gen)
    full_scores = hidden @ table.T
    for ex in (None, exclude):
        expected = ranks_from_scores(full_scores, targets, ex)
        got = chunked_ranks(hidden, table, targets, ex, chunk_items=chunk)
        assert torch.equal(got, expected)
    assert int(chunked_ranks(hidden, table, targets, chunk_items=chunk)[3]) == n
    # The duplicates are real ties: each copy of the target row ranks the target lower.
    copies = (table[1:] == table[targets][:, None]).all(-1).sum(1)  # includes the target
    better = (full_scores[:, 1:] > full_scores.gather(1, targets[:, None])).sum(1)
    ranks = ranks_from_scores(full_scores, targets)
    live = torch.arange(b) != 3  # row 3 ties everything
    assert torch.equal(ranks[live], (better + copies)[live])
    assert (copies > 1).sum() > 5


def test_chunked_ranks_nan_hidden_ranks_last():
    table = torch.randn(11, 3)
    hidden = torch.tensor([[NAN, 0.0, 0.0], [1.0, 0.0, 0.0]])
    ranks = chunked_ranks(hidden, table, torch.tensor([2, 2]), chunk_items=4)
    assert int(ranks[0]) == 10


# ------------------------------------------------------------------------ top-k


@pytest.mark.parametrize("chunk", [1, 4, 13, 100])
def test_topk_matches_full_sort_with_ties_lower_index_first(chunk):
    gen = torch.Generator().manual_seed(2)
    b, n, d = 6, 30, 3
    hidden = torch.randint(-1, 2, (b, d), generator=gen).float()
    table = torch.randint(-1, 2, (n + 1, d), generator=gen).float()
    table[0] = 10.0  # padding would win if it were scored
    hidden[0] = 0.0  # every item tied: the lowest indices that are not excluded
    exclude = torch.randint(0, n + 1, (b, 5), generator=gen)
    for ex in (None, exclude):
        scores = hidden @ table.T
        scores[:, 0] = -INF
        if ex is not None:
            scores.scatter_(1, ex, -INF)
        ref = torch.sort(scores[:, 1:], dim=1, descending=True, stable=True)
        top_s, top_i = chunked_topk(hidden, table, 7, ex, chunk_items=chunk)
        assert torch.equal(top_i, ref.indices[:, :7] + 1)
        assert torch.equal(top_s, ref.values[:, :7])
    assert ((top_i[:, :, None] != exclude[:, None, :]) | (exclude[:, None, :] == 0)).all()


def test_topk_random_floats_all_chunk_sizes_agree():
    gen = torch.Generator().manual_seed(4)
    hidden, table = torch.randn(16, 8, generator=gen), torch.randn(501, 8, generator=gen)
    scores = hidden @ table.T
    ref_s, ref_i = scores[:, 1:].topk(20, dim=1)
    for chunk in (7, 64, 500, 501):
        top_s, top_i = chunked_topk(hidden, table, 20, chunk_items=chunk)
        assert torch.equal(top_i, ref_i + 1)
        assert torch.allclose(top_s, ref_s)


def test_topk_k_above_catalogue_is_clamped():
    table = torch.tensor([[0.0], [1.0], [3.0], [2.0]])
    scores, items = chunked_topk(torch.tensor([[1.0]]), table, 10, chunk_items=2)
    assert items.tolist() == [[2, 3, 1]] and scores.tolist() == [[3.0, 2.0, 1.0]]


# ---------------------------------------------------------------------- sampled


def test_sampled_ranks_from_scores_and_hidden_agree():
    #                    pad  1    2    3    4    5
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0, 4.0, 1.0]])
    target = torch.tensor([2])
    assert int(sampled_ranks(scores, target, torch.tensor([[5, 3]]))[0]) == 1
    assert int(sampled_ranks(scores, target, torch.tensor([[5, 4, 1]]))[0]) == 3  # tie + better
    assert int(sampled_ranks(scores, target, torch.tensor([[2, 0, 1]]))[0]) == 2  # self, pad
    gen = torch.Generator().manual_seed(3)
    hidden, table = torch.randn(8, 16, generator=gen), torch.randn(51, 16, generator=gen)
    targets = torch.randint(1, 51, (8,), generator=gen)
    negatives = torch.randint(0, 51, (8, 20), generator=gen)
    table[negatives[:, 0]] = table[targets]  # forced ties
    via_hidden = sampled_ranks(hidden, targets, negatives, table=table)
    via_scores = sampled_ranks(hidden @ table.T, targets, negatives)
    assert torch.equal(via_hidden, via_scores)
    assert (via_hidden >= 2).all()


# --------------------------------------------------------------------- evaluate


@dataclass
class TinyConfig(ModelConfig):
    embedding_dim: int = 8


class LastItem(SequenceModel):
    """Encodes a history as its last item's embedding (plus dropout, to see eval mode)."""

    name, family, paper = "last_item", "test", "-"

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.embedding = HistoryEmbedding(config, spec)
        self.dropout = nn.Dropout(0.9)
        self.modes: list[tuple[bool, bool]] = []  # (training, grad enabled) per call

    def encode(self, batch):
        self.modes.append((self.training, torch.is_grad_enabled()))
        hidden = self.embedding(batch)
        index = (batch["lengths"] - 1).view(-1, 1, 1).expand(-1, 1, hidden.size(-1))
        return self.dropout(hidden.gather(1, index).squeeze(1))


class FixedScores(Baseline):
    """Scores from a fixed vector (like popularity), the same for every history."""

    name, paper = "fixed", "-"

    def __init__(self, values):
        super().__init__(None, DataSpec(n_items=len(values) - 1))
        self.values = torch.tensor(values)

    def scores(self, batch):
        return self.values.expand(batch["targets"].size(0), -1)


def make_batches(n_items: int, seed: int = 0, n_batches: int = 3, size: int = 5):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        lengths = torch.randint(1, 5, (size,), generator=gen)
        items = torch.randint(1, n_items + 1, (size, 4), generator=gen)
        items[torch.arange(4)[None, :] >= lengths[:, None]] = 0
        out.append(
            {
                "items": items,
                "behaviors": (items > 0).long(),
                "categories": torch.zeros_like(items),
                "gaps": torch.zeros_like(items),
                "lengths": lengths,
                "targets": torch.randint(1, n_items + 1, (size,), generator=gen),
                "negatives": torch.randint(0, n_items + 1, (size, 6), generator=gen),
            }
        )
    return out


def expected_metrics(ranks: torch.Tensor, ks=(5, 10, 20, 50)) -> dict[str, float]:
    m = RankingMetrics(ks)
    m.update(ranks)
    return {k: float(v) for k, v in m.compute().items()}


def test_evaluate_baseline_hand_values():
    #                 pad  1    2    3    4    5    6
    model = FixedScores([9.0, 6.0, 5.0, 5.0, 3.0, 2.0, 1.0])
    batch = {
        "items": torch.tensor([[1, 0], [2, 3], [6, 0]]),
        "lengths": torch.tensor([1, 2, 1]),
        "targets": torch.tensor([1, 3, 4]),
    }
    out = evaluate(model, [batch], ks=(1, 3), return_reciprocal_ranks=True)
    assert out["ranks"].tolist() == [1, 3, 4]  # item 3 ties item 2 -> rank 3
    assert out["hr@1"] == pytest.approx(1 / 3) and out["hr@3"] == pytest.approx(2 / 3)
    assert out["mrr@3"] == pytest.approx((1 + 1 / 3) / 3)
    assert out["ndcg@3"] == pytest.approx((1 + 0.5) / 3)
    assert out["n_examples"] == 3
    assert out["reciprocal_ranks"].tolist() == pytest.approx([1.0, 1 / 3, 1 / 4])
    assert out["is_repeat"].tolist() == [True, True, False]  # 1 in [1], 3 in [2, 3], 4 not
    assert (out["targets"], out["repeat_targets"], out["explore_targets"]) == (3, 2, 1)
    assert out["repeat_hr@3"] == pytest.approx(1.0) and out["explore_hr@3"] == 0.0
    out = evaluate(model, [batch], ks=(1, 3), exclude_history=True, return_reciprocal_ranks=True)
    assert out["ranks"].tolist() == [1, 2, 4]  # history items 2, 3 / 6 removed; target kept


def test_evaluate_neural_equals_full_scores_and_restores_train_mode():
    spec = DataSpec(n_items=23)
    model = LastItem(TinyConfig(use_behavior=False), spec)
    model.train()
    batches = make_batches(spec.n_items)
    with torch.no_grad():
        model.eval()
        ranks = torch.cat([ranks_from_scores(model.scores(b), b["targets"]) for b in batches])
        excl = torch.cat(
            [ranks_from_scores(model.scores(b), b["targets"], b["items"]) for b in batches]
        )
        model.train()
    model.modes.clear()
    out = evaluate(model, batches, return_reciprocal_ranks=True, chunk_items=5)
    assert model.training and model.modes and not any(any(m) for m in model.modes)
    assert torch.equal(out["ranks"], ranks)
    assert torch.equal(out["reciprocal_ranks"], 1.0 / ranks.double())
    for key, value in expected_metrics(ranks).items():
        assert out[key] == pytest.approx(value, abs=1e-12)
    out = evaluate(model, batches, exclude_history=True, return_reciprocal_ranks=True)
    assert torch.equal(out["ranks"], excl)
    assert (excl <= ranks).all() and (excl < ranks).any()
    assert "ranks" not in evaluate(model, batches)
    assert evaluate(model, batches)["n_examples"] == 15


def test_evaluate_sampled_metrics_are_prefixed_and_separate():
    spec = DataSpec(n_items=23)
    model = LastItem(TinyConfig(use_behavior=False), spec)
    batches = make_batches(spec.n_items, seed=1)
    out = evaluate(model, batches, ks=(5,), sampled=True)
    with torch.no_grad():
        model.eval()
        sranks = torch.cat(
            [sampled_ranks(model.scores(b), b["targets"], b["negatives"]) for b in batches]
        )
    full = [f"{group}{name}@5" for group in ("", "repeat_", "explore_") for name in METRICS]
    counts = ["targets", "repeat_targets", "explore_targets", "n_examples"]
    sampled_keys = [f"sampled_{name}@5" for name in METRICS]
    assert set(out) == {*full, *counts, *sampled_keys}
    for key, value in expected_metrics(sranks, ks=(5,)).items():
        assert out["sampled_" + key] == pytest.approx(value, abs=1e-12)
    assert out["sampled_hr@5"] >= out["hr@5"]  # 6 negatives are easier than every item
    base = evaluate(FixedScores(list(range(24, 0, -1))), batches, ks=(5,), sampled=True)
    assert "sampled_mrr@5" in base
    # by default the batches decide: negatives present -> sampled keys on top
    assert evaluate(model, batches, ks=(5,)) == out
    no_negatives = [{k: v for k, v in b.items() if k != "negatives"} for b in batches]
    assert set(evaluate(model, no_negatives, ks=(5,))) == {*full, *counts}
    assert not any(k.startswith("sampled_") for k in evaluate(model, batches, sampled=False))
    with pytest.raises(ConfigError, match="negatives"):
        evaluate(model, no_negatives, sampled=True)


def test_evaluate_rejects_empty_input():
    with pytest.raises(DataError, match="no examples"):
        evaluate(FixedScores([0.0, 1.0]), [])
