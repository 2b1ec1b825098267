"""SequenceDataModule against hand-made artifacts and a naive per-row reconstruction."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import polars as pl
import pytest
import torch

from bench.datasets.datamodule import SequenceDataModule
from bench.errors import DataError

torch.set_num_threads(1)

BEHAVIOR_NAMES = ("pv", "fav", "cart", "buy")


def write_artifact(
    folder: Path,
    sequences: list[list[tuple[int, int, int, int, int]]],
    *,
    n_items: int | None = None,
    n_categories: int | None = None,
    max_len: int = 50,
    meta: dict | None = None,
) -> Path:
    """An artifact folder following bench/datasets/artifact.py, written by hand.

    `sequences[s]` lists events (item, behavior, category, ts, split) in time order.
    Examples: every event after a sequence's first one is the target of its split.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows, train, valid, test = [], [], [], []
    for s, events in enumerate(sequences):
        start = len(rows)
        for k, (item, behavior, category, ts, split) in enumerate(events):
            if k > 0:
                (train, valid, test)[split].append((len(rows), start))
            rows.append((s, item, behavior, category, ts, split))
    cols = list(zip(*rows, strict=True))
    pl.DataFrame(
        {
            "seq": pl.Series(cols[0], dtype=pl.UInt32),
            "item": pl.Series(cols[1], dtype=pl.UInt32),
            "behavior": pl.Series(cols[2], dtype=pl.UInt8),
            "category": pl.Series(cols[3], dtype=pl.UInt32),
            "ts": pl.Series(cols[4], dtype=pl.Int64),
            "split": pl.Series(cols[5], dtype=pl.UInt8),
        }
    ).write_parquet(folder / "events.parquet")
    for name, examples in (("train", train), ("valid", valid), ("test", test)):
        pos = [p for p, _ in examples]
        start = [s for _, s in examples]
        pl.DataFrame(
            {"pos": pl.Series(pos, dtype=pl.UInt64), "start": pl.Series(start, dtype=pl.UInt64)}
        ).write_parquet(folder / f"{name}.parquet")
    n_items = n_items or max(r[1] for r in rows)
    n_categories = n_categories if n_categories is not None else max(r[3] for r in rows)
    train_count = [0] * (n_items + 1)
    category_of = [0] * (n_items + 1)
    for _, item, _, category, _, split in rows:
        category_of[item] = category
        if split == 0:
            train_count[item] += 1
    pl.DataFrame(
        {
            "item": pl.Series(range(1, n_items + 1), dtype=pl.UInt32),
            "raw_item": [f"i{i}" for i in range(1, n_items + 1)],
            "category": pl.Series(category_of[1:], dtype=pl.UInt32),
            "train_count": pl.Series(train_count[1:], dtype=pl.UInt64),
        }
    ).write_parquet(folder / "items.parquet")
    pl.DataFrame(
        {
            "category": pl.Series(range(1, n_categories + 1), dtype=pl.UInt32),
            "raw_category": [f"c{c}" for c in range(1, n_categories + 1)],
        }
    ).write_parquet(folder / "categories.parquet")
    info = {
        "dataset": "hand",
        "synthetic": True,
        "protocol": "user-time",
        "protocol_version": 1,
        "params": {"max_len": max_len},
        "hash": "0" * 64,
        "has_time": True,
        "counts": {"events": len(rows), "sequences": len(sequences)},
        "drops": {},
    }
    info.update(meta or {})
    (folder / "meta.json").write_text(json.dumps(info))
    return folder


def small_sequences() -> list[list[tuple[int, int, int, int, int]]]:
    """Three sequences; items 8 and 9 occur only in the valid / test windows."""
    return [
        # item, behavior, category, ts, split
        [(1, 1, 1, 100, 0), (2, 1, 1, 100, 0), (3, 3, 2, 107, 0), (1, 4, 1, 5000, 0),
         (8, 1, 3, 90000, 1), (9, 4, 3, 180000, 2)],
        [(4, 1, 2, 10, 0), (5, 2, 0, 11, 0), (4, 1, 2, 4000000000, 0)],
        [(2, 1, 1, 50, 0), (6, 1, 2, 51, 0), (8, 1, 3, 86450, 1), (9, 2, 3, 86460, 1),
         (7, 1, 0, 172900, 2)],
    ]  # fmt: skip


def random_sequences(n_seq: int, seed: int) -> list[list[tuple[int, int, int, int, int]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n_seq):
        ts = rng.randrange(1_000_000)
        events = []
        for k in range(rng.randrange(1, 14)):
            ts += rng.choice([0, 1, 5, 60, 3600, 10**6])
            split = 0 if k < 7 else rng.choice([1, 2])
            split = max(split, events[-1][4]) if events else split
            events.append(
                (rng.randrange(1, 30), rng.randrange(1, 5), rng.randrange(0, 6), ts, split)
            )
        out.append(events)
    return out


def naive_bucket(gap: int, first: bool) -> int:
    if first:
        return 1
    return min(2 + math.floor(math.log2(1 + max(gap, 0))), 32)


def naive_examples(sequences, split: int, max_len: int) -> list[dict]:
    """Per-row Python reconstruction of every example of `split`, in artifact order."""
    out = []
    for events in sequences:
        for k in range(1, len(events)):
            if events[k][4] != split:
                continue
            lo = max(0, k - max_len)
            hist = events[lo:k]
            out.append(
                {
                    "items": [e[0] for e in hist],
                    "behaviors": [e[1] for e in hist],
                    "categories": [e[2] for e in hist],
                    "gaps": [
                        naive_bucket(events[j][3] - events[j - 1][3] if j else 0, j == 0)
                        for j in range(lo, k)
                    ],
                    "target": events[k][0],
                    "target_behavior": events[k][1],
                }
            )
    # the artifact lists examples of a split in event order, as we do here
    return out


def split_order(sequences, split: int) -> list[dict]:
    return naive_examples(sequences, split, 10**9)


def assert_batch_matches(batch: dict, expected: list[dict]) -> None:
    assert set(batch) == {
        "items", "behaviors", "categories", "gaps", "lengths", "targets", "target_behaviors"
    }  # fmt: skip
    for key, value in batch.items():
        assert value.dtype == torch.int64, key
    width = batch["items"].size(1)
    assert width == max(len(e["items"]) for e in expected)
    for b, e in enumerate(expected):
        n = len(e["items"])
        assert batch["lengths"][b].item() == n
        for key in ("items", "behaviors", "categories", "gaps"):
            assert batch[key][b].tolist() == e[key] + [0] * (width - n), (key, b)
        assert batch["targets"][b].item() == e["target"]
        assert batch["target_behaviors"][b].item() == e["target_behavior"]


@pytest.mark.parametrize("max_len", [None, 2, 3])
@pytest.mark.parametrize("split", [0, 1, 2])
def test_gather_equals_naive_small(tmp_path, max_len, split):
    seqs = small_sequences()
    artifact = write_artifact(tmp_path / "a", seqs, max_len=50)
    data = SequenceDataModule(artifact, max_len=max_len, eval_batch_size=1000)
    name = ("train", "valid", "test")[split]
    batches = list(data.split_dataloader(name))
    assert len(batches) == 1
    assert_batch_matches(batches[0], naive_examples(seqs, split, max_len or 50))


def test_small_known_values(tmp_path):
    """A few values worked out by hand, so the naive reference itself is pinned."""
    data = SequenceDataModule(write_artifact(tmp_path / "a", small_sequences()), max_len=2)
    batch = next(iter(data.split_dataloader("test")))
    # seq 0, target item 9 at ts 180000: history = last two events (1 @ 5000, 8 @ 90000)
    assert batch["items"][0].tolist() == [1, 8]
    # gaps: 5000 - 107 = 4893 -> 2 + floor(log2 4894) = 14; 85000 -> 2 + 16 = 18 (not first:
    # truncation does not make the oldest kept event a sequence start)
    assert batch["gaps"][0].tolist() == [14, 18]
    valid = next(iter(data.split_dataloader("valid")))
    # seq 2's first valid example has history (2, 6); item 2 is the sequence's first event
    assert valid["items"][1].tolist() == [2, 6]
    assert valid["gaps"][1].tolist() == [1, 3]  # first event; 1 s -> 2 + floor(log2 2) = 3
    assert valid["lengths"].tolist() == [2, 2, 2]


def test_gather_equals_naive_random(tmp_path):
    seqs = random_sequences(60, seed=3)
    artifact = write_artifact(tmp_path / "r", seqs, max_len=5)
    data = SequenceDataModule(artifact, eval_batch_size=7)  # max_len 5 from meta
    for split, name in enumerate(("train", "valid", "test")):
        expected = naive_examples(seqs, split, 5)
        got = list(data.split_dataloader(name))
        assert sum(b["targets"].numel() for b in got) == len(expected) > 0
        for i, batch in enumerate(got):
            assert_batch_matches(batch, expected[i * 7 : (i + 1) * 7])


def test_random_batch_indices_gather(tmp_path):
    """__getitems__ with arbitrary (repeated, unordered) indices, as a sampler gives them."""
    seqs = random_sequences(40, seed=5)
    data = SequenceDataModule(write_artifact(tmp_path / "r", seqs), max_len=4)
    dataset = data.dataset("train")
    expected = naive_examples(seqs, 0, 4)
    indices = [5, 0, len(expected) - 1, 5, 17]
    assert_batch_matches(dataset.__getitems__(indices), [expected[i] for i in indices])
    single = dataset[3]
    assert single["items"][: single["lengths"]].tolist() == expected[3]["items"]


def test_train_never_serves_valid_or_test(tmp_path):
    seqs = small_sequences()
    data = SequenceDataModule(write_artifact(tmp_path / "a", seqs), batch_size=2, seed=1)
    expected = naive_examples(seqs, 0, 50)
    seen = []
    for batch in data.train_dataloader():
        # items 8 and 9 exist only in the valid / test windows
        assert not torch.isin(batch["targets"], torch.tensor([8, 9])).any()
        assert not torch.isin(batch["items"], torch.tensor([8, 9])).any()
        for b in range(batch["targets"].numel()):
            n = batch["lengths"][b].item()
            seen.append((tuple(batch["items"][b, :n].tolist()), batch["targets"][b].item()))
    # every training example exactly once per epoch
    assert sorted(seen) == sorted((tuple(e["items"]), e["target"]) for e in expected)


def train_order(data: SequenceDataModule, epoch: int) -> tuple[list[int], list[list[int]]]:
    """(example indices the sampler yields, targets of the batches served) in one epoch."""
    loader = data.train_dataloader()
    loader.sampler.set_epoch(epoch)
    targets = [batch["targets"].tolist() for batch in loader]
    return list(loader.sampler), targets


def test_shuffle_is_deterministic_per_seed_and_epoch(tmp_path):
    artifact = write_artifact(tmp_path / "r", random_sequences(80, seed=1))
    a = SequenceDataModule(artifact, batch_size=16, seed=7)
    b = SequenceDataModule(artifact, batch_size=16, seed=7)
    c = SequenceDataModule(artifact, batch_size=16, seed=8)
    indices, targets = train_order(a, 0)
    assert (indices, targets) == train_order(b, 0)
    dataset = a.dataset("train")
    served = [t for batch in targets for t in batch]
    assert served == dataset.events.items[dataset.pos[indices]].tolist()  # batches follow it
    assert train_order(a, 0) != train_order(c, 0)
    assert train_order(a, 1) != train_order(a, 0)
    assert train_order(a, 1) == train_order(b, 1)  # a resumed run at epoch 1 sees the same order
    # evaluation is in file order
    first = next(iter(a.split_dataloader("valid")))
    expected = naive_examples(random_sequences(80, seed=1), 1, 50)
    assert first["targets"].tolist() == [e["target"] for e in expected[: len(first["targets"])]]


def test_shards_cover_every_example_once(tmp_path):
    """Under several ranks, train shards partition the epoch's permutation, eval shards
    partition the examples without padding duplicates."""
    seqs = random_sequences(50, seed=2)
    artifact = write_artifact(tmp_path / "r", seqs)
    train, valid = [], []
    for rank in range(3):
        data = SequenceDataModule(artifact, batch_size=8, eval_batch_size=8, seed=3)
        data._world = lambda rank=rank: (3, rank)
        train += list(data.train_dataloader().sampler)
        valid += list(data.split_dataloader("valid").sampler)
    n_train = len(naive_examples(seqs, 0, 50))
    n_valid = len(naive_examples(seqs, 1, 50))
    assert set(train) == set(range(n_train))  # DistributedSampler pads to a multiple of 3
    assert sorted(valid) == list(range(n_valid))


def test_spec(tmp_path):
    data = SequenceDataModule(write_artifact(tmp_path / "a", small_sequences(), n_items=10))
    spec = data.spec()
    assert spec.n_items == 10
    assert spec.n_categories == 3
    assert spec.max_len == 50
    assert spec.has_behavior and spec.has_category and spec.has_time
    # training support: item 1 twice, items 2 and 4 twice, 3, 5, 6 once, 7..10 never
    assert spec.item_counts.tolist() == [0, 2, 2, 1, 2, 1, 1, 0, 0, 0, 0]
    assert spec.item_counts.dtype == torch.int64


def test_spec_flags_off(tmp_path):
    seqs = [[(1, 1, 0, 0, 0), (2, 1, 0, 1, 0), (1, 1, 0, 2, 1)], [(2, 1, 0, 0, 0), (1, 1, 0, 1, 2)]]
    artifact = write_artifact(
        tmp_path / "a", seqs, n_categories=0, max_len=7, meta={"has_time": False}
    )
    spec = SequenceDataModule(artifact).spec()
    assert (spec.has_behavior, spec.has_category, spec.has_time) == (False, False, False)
    assert spec.n_categories == 0 and spec.max_len == 7


def test_train_sequences_csr(tmp_path):
    seqs = small_sequences()
    train = SequenceDataModule(write_artifact(tmp_path / "a", seqs)).train_sequences()
    offsets = train.offsets.tolist()
    assert offsets == [0, 4, 7, 9]
    for i, events in enumerate(seqs):
        kept = [e for e in events if e[4] == 0]
        lo, hi = offsets[i], offsets[i + 1]
        assert train.items[lo:hi].tolist() == [e[0] for e in kept]
        assert train.behaviors[lo:hi].tolist() == [e[1] for e in kept]
        assert train.ts[lo:hi].tolist() == [e[3] for e in kept]
    for t in (train.items, train.behaviors, train.ts, train.offsets):
        assert t.dtype == torch.int64


def test_lightning_fit_runs_with_the_datamodule(tmp_path):
    """A tiny model trains one epoch through Lightning with this DataModule (batches reach it)."""
    import lightning as L

    artifact = write_artifact(tmp_path / "r", random_sequences(30, seed=4))
    data = SequenceDataModule(artifact, batch_size=8, eval_batch_size=16)
    n_items = data.spec().n_items

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Embedding(n_items + 1, 4)
            self.seen = 0

        def training_step(self, batch, _):
            self.seen += batch["targets"].numel()
            h = self.table(batch["items"]).sum(1)
            return torch.nn.functional.cross_entropy(h @ self.table.weight.T, batch["targets"])

        def validation_step(self, batch, _):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Tiny()
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    assert model.seen == len(data.dataset("train"))


def test_missing_file_is_a_clear_error(tmp_path):
    artifact = write_artifact(tmp_path / "a", small_sequences())
    (artifact / "valid.parquet").unlink()
    data = SequenceDataModule(artifact)
    with pytest.raises(DataError, match="valid.parquet is missing") as err:
        data.dataset("valid")
    assert "--force" in err.value.render()
    with pytest.raises(DataError, match="meta.json"):
        SequenceDataModule(tmp_path / "nothing")


def test_corrupt_examples_are_refused(tmp_path):
    artifact = write_artifact(tmp_path / "a", small_sequences())
    # an example whose start is not its sequence's first event
    pl.DataFrame(
        {"pos": pl.Series([2], dtype=pl.UInt64), "start": pl.Series([1], dtype=pl.UInt64)}
    ).write_parquet(artifact / "test.parquet")
    with pytest.raises(DataError, match="no valid history"):
        SequenceDataModule(artifact).dataset("test")


# ---------------------------------------------------------------- a real prepared artifact

DATA_DIR = Path(
    os.environ.get("BENCH_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(scope="module")
def taobao(tmp_path_factory):
    from bench.datasets.prepare import prepare

    return prepare("taobao", data_dir=DATA_DIR, cache_dir=tmp_path_factory.mktemp("cache"))


def test_real_artifact_batches_match_naive(taobao):
    """On the prepared Taobao sample: sampled examples of every split, rebuilt row by row
    from the artifact's own tables, equal the served batches; spec agrees with meta."""
    events = pl.read_parquet(taobao / "events.parquet")
    seq, item, behavior = events["seq"].to_list(), events["item"].to_list(), events["behavior"]
    category, ts = events["category"].to_list(), events["ts"].to_list()
    behavior = behavior.to_list()
    data = SequenceDataModule(taobao, max_len=20)
    rng = random.Random(0)
    for name in ("train", "valid", "test"):
        examples = pl.read_parquet(taobao / f"{name}.parquet")
        picks = rng.sample(range(examples.height), min(200, examples.height))
        expected = []
        for i in picks:
            pos, start = examples["pos"][i], examples["start"][i]
            lo = max(start, pos - 20)
            rows = range(lo, pos)
            expected.append(
                {
                    "items": [item[r] for r in rows],
                    "behaviors": [behavior[r] for r in rows],
                    "categories": [category[r] for r in rows],
                    "gaps": [naive_bucket(ts[r] - ts[r - 1] if r else 0, r == start) for r in rows],
                    "target": item[pos],
                    "target_behavior": behavior[pos],
                }
            )
            assert seq[start] == seq[pos - 1] == seq[pos]
        assert_batch_matches(data.dataset(name).__getitems__(picks), expected)
    spec = data.spec()
    meta = json.loads((taobao / "meta.json").read_text())
    assert spec.n_items == meta["n_items"] and spec.n_categories == meta["n_categories"]
    train_items = events.filter(pl.col("split") == 0)["item"].cast(pl.Int64).to_torch()
    assert torch.equal(spec.item_counts, torch.bincount(train_items, minlength=spec.n_items + 1))
    assert spec.has_behavior and spec.has_time
    train = data.train_sequences()
    assert train.items.numel() == train_items.numel() == int(train.offsets[-1])


def test_gap_chunks_join_at_their_boundaries(tmp_path, monkeypatch):
    """Gaps are bucketed in chunks of events; tiny chunks must give the same batches."""
    import bench.datasets.datamodule as dm

    monkeypatch.setattr(dm, "_GAP_CHUNK", 3)
    seqs = random_sequences(25, seed=9)
    data = SequenceDataModule(write_artifact(tmp_path / "r", seqs), eval_batch_size=10_000)
    assert_batch_matches(next(iter(data.split_dataloader("train"))), naive_examples(seqs, 0, 50))


def naive_targets_by_event(sequences, max_len: int) -> dict[int, dict]:
    """The prefix-mode training example of every split-0 target, keyed by its event row."""
    out, row = {}, 0
    for events in sequences:
        for k in range(len(events)):
            if k > 0 and events[k][4] == 0:
                lo = max(0, k - max_len)
                hist = events[lo:k]
                out[row + k] = {
                    "items": [e[0] for e in hist],
                    "behaviors": [e[1] for e in hist],
                    "target": events[k][0],
                    "target_behavior": events[k][1],
                }
        row += len(events)
    return out


@pytest.mark.parametrize("max_len", [1, 3, 5])
def test_windows_predict_every_training_target_once_from_its_own_history(tmp_path, max_len):
    seqs = random_sequences(50, seed=11)
    artifact = write_artifact(tmp_path / "w", seqs)
    # drop some training examples, so a history's targets are not contiguous
    train = pl.read_parquet(artifact / "train.parquet")
    train.filter(pl.int_range(pl.len()) % 4 != 1).write_parquet(artifact / "train.parquet")
    kept = set(train.filter(pl.int_range(pl.len()) % 4 != 1)["pos"].to_list())
    expected = {row: e for row, e in naive_targets_by_event(seqs, max_len).items() if row in kept}
    data = SequenceDataModule(artifact, max_len=max_len, training="sequences")
    windows = data.train_windows()
    assert len(windows) < len(kept) or max_len == 1
    batch = windows.__getitems__(list(range(len(windows))))
    seen = []
    for b in range(len(windows)):
        n = int(batch["lengths"][b])
        assert 1 <= n <= max_len
        assert batch["targets"][b, n:].eq(0).all() and batch["items"][b, n:].eq(0).all()
        assert batch["targets"][b, n - 1] > 0  # a window ends at one of its targets
        for j in range(n):
            if batch["targets"][b, j] == 0:
                continue
            row = int(windows.lo[b]) + j + 1
            seen.append(row)
            e = expected[row]
            assert batch["targets"][b, j] == e["target"]
            assert batch["target_behaviors"][b, j] == e["target_behavior"]
            # the history is a suffix of the prefix-mode one (its whole when long enough)
            context = batch["items"][b, : j + 1].tolist()
            assert context == e["items"][len(e["items"]) - len(context) :]
            assert batch["behaviors"][b, : j + 1].tolist() == e["behaviors"][-len(context) :]
    assert sorted(seen) == sorted(expected)  # every target exactly once
    # the windows are what the training loader serves, in a seeded order
    loaded = list(data.train_dataloader())
    assert sum(int((b["targets"] > 0).sum()) for b in loaded) == len(expected)


def test_windows_on_a_real_artifact_hold_every_training_target(taobao):
    data = SequenceDataModule(taobao, training="sequences")
    prefixes = data.dataset("train")
    windows = data.train_windows()
    batch = windows.__getitems__(list(range(len(windows))))
    every = prefixes.__getitems__(list(range(len(prefixes))))["targets"]
    predicted = batch["targets"][batch["targets"] > 0]
    assert len(windows) * 5 < len(prefixes)  # the point: far fewer sequences to encode
    assert sorted(predicted.tolist()) == sorted(every.tolist())


def test_unknown_training_mode_is_refused(tmp_path):
    with pytest.raises(DataError, match="training mode"):
        SequenceDataModule(write_artifact(tmp_path / "a", small_sequences()), training="all")
