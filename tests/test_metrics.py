"""Golden values for HR / MRR / NDCG at cutoffs, and sums that merge across processes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench.errors import ConfigError
from bench.evaluation import RankingMetrics

torch.set_num_threads(1)


def metrics_of(ranks, ks=(5, 10, 20, 50)) -> dict[str, float]:
    m = RankingMetrics(ks=ks)
    m.update(torch.tensor(ranks))
    return {k: float(v) for k, v in m.compute().items()}


def test_names_are_lower_case_per_cutoff():
    assert set(metrics_of([1])) == {
        f"{name}@{k}" for name in ("hr", "mrr", "ndcg") for k in (5, 10, 20, 50)
    }
    m = RankingMetrics(ks=(10,), prefix="sampled_")
    m.update(torch.tensor([1]))
    assert set(m.compute()) == {"sampled_hr@10", "sampled_mrr@10", "sampled_ndcg@10"}


@pytest.mark.parametrize(
    "rank, mrr, ndcg",
    [
        (1, 1.0, 1.0),
        (2, 0.5, 0.6309297535714575),  # 1 / log2(3)
        (3, 1 / 3, 0.5),  # 1 / log2(4)
        (7, 1 / 7, 1 / 3),  # 1 / log2(8)
        (15, 1 / 15, 0.25),  # 1 / log2(16)
    ],
)
def test_single_rank_hand_values(rank, mrr, ndcg):
    out = metrics_of([rank], ks=(20,))
    assert out["hr@20"] == 1.0
    assert out["mrr@20"] == pytest.approx(mrr, abs=1e-15)
    assert out["ndcg@20"] == pytest.approx(ndcg, abs=1e-15)


@pytest.mark.parametrize("k", [5, 10, 20, 50])
def test_cutoff_counts_rank_k_but_not_k_plus_1(k):
    at = metrics_of([k])
    assert at[f"hr@{k}"] == 1.0
    assert at[f"mrr@{k}"] == pytest.approx(1 / k)
    assert at[f"ndcg@{k}"] == pytest.approx(1 / math.log2(k + 1))
    past = metrics_of([k + 1])
    assert past[f"hr@{k}"] == past[f"mrr@{k}"] == past[f"ndcg@{k}"] == 0.0


def test_mean_over_examples_hand_computed():
    out = metrics_of([1, 2, 3, 10, 11, 60])
    # hits: @5 {1,2,3}; @10 {1,2,3,10}; @20 and @50 {1,2,3,10,11}; 60 never
    assert out["hr@5"] == pytest.approx(3 / 6)
    assert out["hr@10"] == pytest.approx(4 / 6)
    assert out["hr@20"] == out["hr@50"] == pytest.approx(5 / 6)
    assert out["mrr@5"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 6)
    assert out["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 10) / 6)
    assert out["mrr@20"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 10 + 1 / 11) / 6)
    assert out["ndcg@5"] == pytest.approx((1 + 0.6309297535714575 + 0.5) / 6)
    assert out["ndcg@10"] == pytest.approx(
        (1 + 0.6309297535714575 + 0.5 + 0.2890648263178879) / 6  # 1 / log2(11)
    )
    assert out["ndcg@50"] == pytest.approx(
        (1 + 0.6309297535714575 + 0.5 + 0.2890648263178879 + 0.27894294565112987) / 6
    )


def test_updates_accumulate_sums_not_batch_means():
    m = RankingMetrics(ks=(1,))
    m.update(torch.tensor([1]))  # batch of 1, hr 1.0
    m.update(torch.tensor([1, 5, 5]))  # batch of 3, hr 1/3
    assert float(m.compute()["hr@1"]) == pytest.approx(2 / 4)  # not (1 + 1/3) / 2
    assert int(m.count) == 4


def test_two_ranks_merged_equal_one_pass():
    gen = torch.Generator().manual_seed(0)
    ranks = torch.randint(1, 80, (101,), generator=gen)
    whole = RankingMetrics()
    whole.update(ranks)
    a, b = RankingMetrics(), RankingMetrics()
    a.update(ranks[:13])  # uneven shares: a mean of means would differ
    b.update(ranks[13:])
    mean_of_means = (float(a.compute()["mrr@50"]) + float(b.compute()["mrr@50"])) / 2
    assert mean_of_means != pytest.approx(float(whole.compute()["mrr@50"]), abs=1e-6)
    summed = {name: getattr(a, name) + getattr(b, name) for name in ("hr", "mrr", "ndcg", "count")}
    a.merge_state(b)
    for name, value in summed.items():
        assert torch.equal(getattr(a, name), value)
    for key, value in whole.compute().items():
        assert float(a.compute()[key]) == pytest.approx(float(value), abs=1e-12)


def test_reset_and_state_dtypes():
    m = RankingMetrics()
    m.update(torch.tensor([3, 4]))
    assert m.hr.dtype == torch.float64 and m.count.dtype == torch.long
    assert m._reductions["hr"] is not None and m._reductions["count"] is not None
    m.reset()
    assert int(m.count) == 0 and float(m.mrr.sum()) == 0.0


def test_empty_metric_is_nan_not_zero():
    m = RankingMetrics(ks=(10,))
    with pytest.warns(UserWarning):
        out = m.compute()
    assert math.isnan(float(out["hr@10"]))


def test_a_counted_group_reports_its_count_and_zero_when_empty():
    """A repeat / explore group may be empty in a split: 0.0 with count 0, no NaN."""
    m = RankingMetrics(ks=(10,), prefix="repeat_", count_key="repeat_targets")
    m.update(torch.tensor([], dtype=torch.long))
    out = {k: float(v) for k, v in m.compute().items()}
    assert out == {"repeat_hr@10": 0.0, "repeat_mrr@10": 0.0, "repeat_ndcg@10": 0.0,
                   "repeat_targets": 0.0}  # fmt: skip
    m.update(torch.tensor([2, 20]))
    out = {k: float(v) for k, v in m.compute().items()}
    assert out["repeat_targets"] == 2.0 and out["repeat_hr@10"] == pytest.approx(0.5)
    assert out["repeat_mrr@10"] == pytest.approx(0.25)


def test_bad_ranks_and_cutoffs_are_rejected():
    with pytest.raises(ValueError, match="ranks start at 1"):
        RankingMetrics().update(torch.tensor([0, 3]))
    for ks in [(), (0, 5), (5.0,), (-1,)]:
        with pytest.raises(ConfigError):
            RankingMetrics(ks=ks)
    assert RankingMetrics(ks=(20, 5, 5)).ks == (5, 20)


def _ddp_worker(rank: int, world: int, init_file: str, shares: list, queue) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    m = RankingMetrics()
    m.update(torch.tensor(shares[rank]))
    queue.put({k: float(v) for k, v in m.compute().items()})  # compute syncs across ranks
    dist.destroy_process_group()


def test_ddp_gathers_sums(tmp_path):
    """Two gloo processes with uneven shares report the one-pass metrics."""
    shares = [[1, 2, 60, 7], [3, 3, 12, 25, 1, 100, 40, 9, 2]]
    ctx = mp.get_context("fork")  # spawn would re-import torch: seconds per process
    queue = ctx.SimpleQueue()
    procs = [
        ctx.Process(target=_ddp_worker, args=(r, 2, str(tmp_path / "init"), shares, queue))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    results = [queue.get(), queue.get()]
    expected = metrics_of(shares[0] + shares[1])
    for got in results:
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key] == pytest.approx(expected[key], abs=1e-12)
