"""Length-bucketed training batches (LengthBucketSampler): each example once an epoch,
batches of similar length padded only to their own longest member, seeded, new each
epoch; on the real diginetica-dynamicrec artifact and on hand-made lengths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from bench.datasets.datamodule import LengthBucketSampler, SequenceDataModule
from bench.datasets.prepare import prepare

torch.set_num_threads(1)

DATA = Path(
    os.environ.get("BENCH_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
DYNAMICREC = DATA / "diginetica-dynamicrec"
BATCH = 256


class _Sized:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def _sampler(lengths: torch.Tensor, batch: int, **kw) -> LengthBucketSampler:
    return LengthBucketSampler(_Sized(lengths.numel()), lengths, batch, **kw)


def _batches(order: list[int], batch: int) -> list[list[int]]:
    return [order[i : i + batch] for i in range(0, len(order), batch)]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    if not DYNAMICREC.exists():
        pytest.skip("diginetica-dynamicrec not available")
    cache = tmp_path_factory.mktemp("cache")
    return prepare("diginetica-dynamicrec", "user-loo", data_dir=DYNAMICREC, cache_dir=cache)


@pytest.mark.parametrize("training", ["prefixes", "sequences"])
def test_real_batches_hold_each_example_once_with_little_padding(artifact, training):
    module = SequenceDataModule(
        artifact, batch_size=BATCH, training=training, seed=3, length_buckets=True
    )
    loader = module.train_dataloader()
    dataset = loader.dataset
    lengths = dataset.lengths()
    assert isinstance(loader.sampler, LengthBucketSampler)
    order = list(loader.sampler)
    assert sorted(order) == list(range(len(dataset)))

    spreads, widths = [], []
    for k, batch in enumerate(loader):
        if k == 60:  # enough batches for the means; the full pass is the order check above
            break
        got = batch["lengths"]
        torch.testing.assert_close(got, lengths[order[k * BATCH : (k + 1) * BATCH]])
        assert batch["items"].shape[1] == int(got.max())  # padded to its own longest member
        spreads.append(float(got.max() - got.min()))
        widths.append(float(got.max()))
    randomly = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(3))
    random_spread = [float(lengths[b].max() - lengths[b].min()) for b in randomly.split(BATCH)]
    mean = sum(spreads) / len(spreads)
    assert mean < 0.2 * sum(random_spread) / len(random_spread), (mean, random_spread[:5])
    assert sum(widths) / len(widths) < 0.5 * float(lengths.max())


def test_same_seed_same_order_new_epoch_new_order(artifact):
    lengths = SequenceDataModule(artifact, training="sequences").train_windows().lengths()
    first, again = _sampler(lengths, BATCH, seed=5), _sampler(lengths, BATCH, seed=5)
    assert list(first) == list(again)
    epoch0 = list(first)
    first.set_epoch(1)
    assert list(first) != epoch0 and sorted(first) == sorted(epoch0)
    assert list(_sampler(lengths, BATCH, seed=6)) != epoch0


def test_one_mega_chunk_gives_disjoint_length_ranges_and_short_batch_last():
    lengths = torch.randint(1, 51, (1_003,), generator=torch.Generator().manual_seed(0))
    order = list(_sampler(lengths, 100, chunk_batches=11, seed=1))
    assert sorted(order) == list(range(1_003))
    batches = _batches(order, 100)
    assert [len(b) for b in batches] == [100] * 10 + [3]
    ranges = sorted((int(lengths[b].min()), int(lengths[b].max())) for b in batches)
    assert all(hi <= lo for (_, hi), (lo, _) in zip(ranges, ranges[1:], strict=False))
    assert int(lengths[batches[-1]].min()) == int(lengths.max())  # the longest, kept last
    # full batches come in shuffled, not sorted, order
    firsts = [int(lengths[b].min()) for b in batches[:-1]]
    assert firsts != sorted(firsts)


def test_ranks_take_disjoint_equal_shards_of_the_same_permutation():
    lengths = torch.randint(1, 30, (999,), generator=torch.Generator().manual_seed(2))
    shards = [list(_sampler(lengths, 32, num_replicas=2, rank=r, seed=4)) for r in (0, 1)]
    plain = [list(DistributedSampler(_Sized(999), num_replicas=2, rank=r, seed=4)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 500
    for bucketed, unbucketed in zip(shards, plain, strict=True):
        assert sorted(bucketed) == sorted(unbucketed)  # DistributedSampler's shard, reordered
    assert set(shards[0]) | set(shards[1]) == set(range(999))


def test_buckets_are_asked_for_and_named_in_the_run_id(artifact):
    """Off by default (on ml-100k they peaked early and lower), so a run without them
    keeps the plain shuffled order and its id; asking for them is another run."""
    from torch.utils.data import DistributedSampler

    from bench.training.config import resolve
    from bench.training.run import run_id_for

    plain = SequenceDataModule(artifact, batch_size=BATCH, seed=3).train_dataloader().sampler
    assert type(plain) is DistributedSampler and plain.shuffle
    base = {"model": "gru4rec", "dataset": "diginetica-dynamicrec"}
    default = resolve({}, {}, dict(base))
    bucketed = resolve({}, {"length_buckets": True}, dict(base))
    assert run_id_for(default, "user-loo") != run_id_for(bucketed, "user-loo")
    assert run_id_for(default, "user-loo") == run_id_for(
        resolve({}, {"length_buckets": False}, dict(base)), "user-loo"
    )
