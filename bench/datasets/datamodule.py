"""The DataModule: an artifact's flat event columns as tensors, batches by vectorised gather.

Events are loaded once into compact tensors (int32 / uint8); an example is just
(pos, start) rows into them. A batch of B examples is one (B, L) index matrix,
`lo + arange(L)` with `lo = max(start, pos - max_len)`, masked past the history's
end, so serving a batch costs a handful of tensor ops and no Python per row. The
Dataset exposes `__getitems__`, which torch's fetcher calls with a whole batch of
indices; the collate function passes the finished dict through.

Batches follow the contract in `bench.contract` (`Batch`, all int64): the history keys,
`targets`, `target_behaviors`, and, for valid / test examples of an artifact prepared with
`sampled_negatives`, `negatives` (B, S): the frozen negatives of each example, which
sampled metrics rank the target against. L is the longest history in the batch
(<= max_len), so short session data does not pay for padding up to max_len.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from bench.contract import DataSpec, TrainSequences, gap_bucket
from bench.datasets.artifact import read_meta
from bench.datasets.schema import SPLITS
from bench.datasets.spec import (
    artifact_file,
    artifact_max_len,
    read_spec,
    read_train_sequences,
)
from bench.errors import DataError

TRAINING_MODES = ("prefixes", "sequences")  # one example per target, or whole windows
_GAP_CHUNK = 1 << 22  # events per chunk when bucketing gaps (bounds temporary memory)


@dataclass
class EventTensors:
    """Flat per-event columns, compact; widened to int64 only after the gather."""

    items: torch.Tensor  # int32 (N,)
    behaviors: torch.Tensor  # uint8 (N,)
    categories: torch.Tensor  # int32 (N,)
    gaps: torch.Tensor  # uint8 (N,), gap bucket to the previous event of the same sequence

    def __len__(self) -> int:
        return self.items.numel()


def _event_gaps(seq: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """Gap bucket of every event; the first event of each sequence gets the `first` bucket."""
    n = ts.numel()
    out = torch.empty(n, dtype=torch.uint8)
    for lo in range(0, n, _GAP_CHUNK):  # chunks of millions of events, not rows
        hi = min(n, lo + _GAP_CHUNK)
        if lo:
            prev_ts, prev_seq = ts[lo - 1 : hi - 1], seq[lo - 1 : hi - 1]
        else:  # row 0 has no predecessor: a fake one from another sequence
            prev_ts = torch.cat([ts[:1], ts[: hi - 1]])
            prev_seq = torch.cat([seq[:1] - 1, seq[: hi - 1]])
        first = seq[lo:hi] != prev_seq
        out[lo:hi] = gap_bucket(ts[lo:hi] - prev_ts, first).to(torch.uint8)
    return out


def _collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`__getitems__` already built the batch (module-level so workers can pickle it)."""
    return batch


def _gather_histories(
    events: EventTensors, lo: torch.Tensor, lengths: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Events lo .. lo + length - 1 of each row as left-aligned (B, L) int64 columns, 0 =
    padding, L the longest; returns (batch with `lengths`, event rows, real-event mask)."""
    width = int(lengths.max()) if lengths.numel() else 0
    offsets = torch.arange(width)
    mask = offsets < lengths.unsqueeze(1)
    rows = torch.where(mask, lo.unsqueeze(1) + offsets, 0)

    def take(column: torch.Tensor) -> torch.Tensor:
        return column[rows].long().masked_fill_(~mask, 0)

    batch = {
        "items": take(events.items),
        "behaviors": take(events.behaviors),
        "categories": take(events.categories),
        "gaps": take(events.gaps),
        "lengths": lengths,
    }
    return batch, rows, mask


class ExampleSet(Dataset):
    """The examples of one split: example i predicts events[pos[i]] from its history
    (and, when given, is ranked against negatives[i] for sampled metrics)."""

    def __init__(
        self,
        events: EventTensors,
        pos: torch.Tensor,
        start: torch.Tensor,
        max_len: int,
        negatives: torch.Tensor | None = None,
    ) -> None:
        self.events = events
        self.pos = pos
        self.start = start
        self.max_len = max_len
        self.negatives = negatives  # int32 (n_examples, S), or None

    def __len__(self) -> int:
        return self.pos.numel()

    def lengths(self) -> torch.Tensor:
        """History length of every example (what its batch is padded to)."""
        return torch.clamp(self.pos - self.start, max=self.max_len)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        pos, start = self.pos[idx], self.start[idx]
        lengths = torch.clamp(pos - start, max=self.max_len)
        batch, _, _ = _gather_histories(self.events, pos - lengths, lengths)
        batch["targets"] = self.events.items[pos].long()
        batch["target_behaviors"] = self.events.behaviors[pos].long()
        if self.negatives is not None:
            batch["negatives"] = self.negatives[idx].long()
        return batch


class WindowSet(Dataset):
    """Training examples packed into whole windows, for `training="sequences"`.

    Prefix training (ExampleSet) encodes each example's history on its own, so a
    sequence of n targets is encoded n times. Models that read out every position
    causally (GRU4Rec, SASRec, the way their papers train) can instead encode a window
    once and take a loss at each position: output j predicts event lo + j + 1.

    The examples of one history (same `start`) are cut into windows of at most
    `max_len` targets, aligned to the history's last target, so every training target
    is predicted exactly once and from a suffix of its own prefix-mode history (the
    same events when it lies at least `max_len` after the window start, fewer
    otherwise). A batch holds `targets` (B, L): the item predicted after each
    position, 0 where there is none.
    """

    def __init__(
        self, events: EventTensors, pos: torch.Tensor, start: torch.Tensor, max_len: int
    ) -> None:
        self.events = events
        self.max_len = max_len
        order = torch.argsort(start * (int(pos.max()) + 1 if pos.numel() else 1) + pos)
        pos, start = pos[order], start[order]
        group_starts, group = torch.unique_consecutive(start, return_inverse=True)
        last = torch.zeros(group_starts.numel(), dtype=torch.long).scatter_reduce(
            0, group, pos, "amax", include_self=False
        )
        window_in_group = (last[group] - pos) // max_len
        key = group * (int(window_in_group.max()) + 1 if pos.numel() else 1) + window_in_group
        keys, window = torch.unique_consecutive(key, return_inverse=True)
        n_windows = keys.numel()
        end = torch.zeros(n_windows, dtype=torch.long).scatter_reduce(
            0, window, pos, "amax", include_self=False
        )
        offset = (window_in_group + 1) * max_len
        lo_of_example = torch.maximum(start, last[group] - offset)
        self.lo = torch.zeros(n_windows, dtype=torch.long).scatter(0, window, lo_of_example)
        self.end = end  # the window's inputs are events lo .. end - 1
        # owner[e] = window whose loss predicts event e (-1: no training target)
        self.owner = torch.full((len(events) + 1,), -1, dtype=torch.long)
        self.owner[pos] = window

    def __len__(self) -> int:
        return self.lo.numel()

    def lengths(self) -> torch.Tensor:
        """Input length of every window (what its batch is padded to)."""
        return self.end - self.lo

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        lo = self.lo[idx]
        batch, rows, mask = _gather_histories(self.events, lo, self.end[idx] - lo)
        nxt = torch.where(mask, rows + 1, len(self.events))  # the owner table's spare slot
        predicted = mask & (self.owner[nxt] == idx.unsqueeze(1))
        nxt = nxt.clamp(max=len(self.events) - 1)
        batch["targets"] = self.events.items[nxt].long().masked_fill_(~predicted, 0)
        batch["target_behaviors"] = self.events.behaviors[nxt].long().masked_fill_(~predicted, 0)
        return batch


class _ShardSampler(DistributedSampler):
    """Evaluation shard of one rank: every world-th example, in order, without the
    padding DistributedSampler adds, so gathered sums count each example once.
    A DistributedSampler subclass so that Lightning does not shard it again."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


class LengthBucketSampler(DistributedSampler):
    """Training order with examples of similar length in the same batch.

    A batch is padded to its longest member, and on session data most histories are
    short (diginetica-dynamicrec's median session has 7 events), so random batches pay
    mostly for padding. This takes DistributedSampler's shuffled shard for (seed, epoch,
    rank), cuts it into mega-chunks of `chunk_batches` batches, sorts each mega-chunk by
    length (stably), cuts it into batches of `batch_size` and shuffles the order of the
    full batches with the same seeded generator; the one short batch, if any, stays last
    so that the DataLoader's consecutive `batch_size` slices are exactly these batches.
    Every example of the shard still comes once per epoch, and the order is random per
    epoch and the same for the same (seed, epoch).
    """

    def __init__(
        self,
        dataset: Dataset,
        lengths: torch.Tensor,
        batch_size: int,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        chunk_batches: int = 50,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.lengths = lengths
        self.batch_size = batch_size
        self.chunk_batches = chunk_batches

    def __iter__(self):
        shard = torch.as_tensor(list(super().__iter__()), dtype=torch.long)
        if shard.numel() == 0:
            return iter([])
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        torch.randperm(len(self.dataset), generator=generator)  # the stream the shard used
        ordered = [
            part[torch.sort(self.lengths[part], stable=True).indices]
            for part in torch.split(shard, self.batch_size * self.chunk_batches)
        ]
        batches = list(torch.split(torch.cat(ordered), self.batch_size))
        short = [batches.pop()] if batches[-1].numel() < self.batch_size else []
        order = torch.randperm(len(batches), generator=generator).tolist()
        return iter(torch.cat([batches[i] for i in order] + short).tolist())


class SequenceDataModule(L.LightningDataModule):
    """Serves one artifact's train / valid / test examples as padded index tensors."""

    def __init__(
        self,
        artifact: str | Path,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        max_len: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        training: str = "prefixes",
        length_buckets: bool = False,
    ) -> None:
        super().__init__()
        self.length_buckets = length_buckets
        if training not in TRAINING_MODES:
            raise DataError(
                f"unknown training mode {training!r}", hint=f"choose {' or '.join(TRAINING_MODES)}"
            )
        self.training = training
        self.artifact = Path(artifact)
        self.meta = read_meta(artifact)  # prepare's folder carries it: not read again
        self.max_len = int(max_len) if max_len else artifact_max_len(self.meta)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._events: EventTensors | None = None
        self._splits: dict[str, ExampleSet | WindowSet] = {}
        self._spec: DataSpec | None = None

    # ---- loading -------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return artifact_file(self.artifact, name)

    def _load_events(self) -> EventTensors:
        if self._events is None:
            frame = pl.read_parquet(
                self._path("events.parquet"), columns=["seq", "item", "behavior", "category", "ts"]
            )
            seq = frame["seq"].cast(pl.Int32).to_torch()  # kept for the example checks
            self._events = EventTensors(
                items=frame["item"].cast(pl.Int32).to_torch(),
                behaviors=frame["behavior"].cast(pl.UInt8).to_torch(),
                categories=frame["category"].cast(pl.Int32).to_torch(),
                gaps=_event_gaps(seq, frame["ts"].cast(pl.Int64).to_torch()),
            )
            self._seq = seq
        return self._events

    def dataset(self, split: str) -> ExampleSet:
        """The examples of `split` (train, valid or test)."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}", hint=f"choose one of: {', '.join(SPLITS)}")
        if split not in self._splits:
            events = self._load_events()
            frame = pl.read_parquet(self._path(f"{split}.parquet"), columns=["pos", "start"])
            pos = frame["pos"].cast(pl.Int64).to_torch()
            start = frame["start"].cast(pl.Int64).to_torch()
            self._check_examples(split, pos, start, len(events))
            negatives = self._negatives(split, pos.numel())
            self._splits[split] = ExampleSet(events, pos, start, self.max_len, negatives)
        return self._splits[split]

    def _negatives(self, split: str, n_examples: int) -> torch.Tensor | None:
        """The frozen negatives of `split` as int32 (n_examples, S), when the artifact has
        them (meta.json lists negatives_<split>.parquet); else None."""
        name = f"negatives_{split}.parquet"
        if name not in (self.meta.get("files") or {}):
            return None
        path = self._path(name)
        column = pl.read_parquet(path, columns=["negatives"])["negatives"]
        lengths = column.list.len()
        width = int(lengths.max() or 0)
        if column.len() != n_examples or (lengths != width).any() or column.null_count():
            raise DataError(
                f"{name} has {column.len()} rows of {lengths.min()}..{lengths.max()} "
                f"negatives; {split} has {n_examples} examples, each needs the same number",
                file=path,
                hint="the artifact is corrupt; rebuild it with `bench data prepare ... --force`",
            )
        array = column.list.to_array(width).to_numpy().astype("int32").reshape(-1, width)
        return torch.from_numpy(array)

    def _check_examples(self, split: str, pos: torch.Tensor, start: torch.Tensor, n: int) -> None:
        """Refuse an artifact whose examples point outside their own sequence."""
        seq = self._seq
        bad = (pos <= start) | (pos >= n) | (start < 0)
        if not bool(bad.any()):
            bad = (seq[pos] != seq[start]) | (
                (start > 0) & (seq[(start - 1).clamp(min=0)] == seq[start])
            )
        if bool(bad.any()):
            row = int(bad.nonzero()[0])
            raise DataError(
                f"example {row} of {split} (pos {int(pos[row])}, start {int(start[row])}) "
                "has no valid history in events.parquet",
                file=self.artifact / f"{split}.parquet",
                hint="the artifact is corrupt; rebuild it with `bench data prepare ... --force`",
            )

    def setup(self, stage: str | None = None) -> None:
        needed = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",)}
        for split in needed.get(stage or "", SPLITS):
            self.dataset(split)

    # ---- what models need ------------------------------------------------------

    def spec(self) -> DataSpec:
        """Sizes and feature flags of the prepared data, for building a model."""
        if self._spec is None:
            self._spec = read_spec(self.artifact, self.meta, self.max_len)
        return self._spec

    def train_sequences(self) -> TrainSequences:
        """Training-window events of each sequence in time order (CSR), for kNN baselines."""
        return read_train_sequences(self.artifact)

    # ---- loaders ---------------------------------------------------------------

    def _world(self) -> tuple[int, int]:
        """(world size, rank) of the attached trainer, else of torch.distributed, else (1, 0)."""
        trainer = self.trainer
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def _loader(self, dataset: ExampleSet, batch_size: int, sampler) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=_collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_windows(self) -> WindowSet:
        """The training examples packed into windows (see WindowSet)."""
        if "train_windows" not in self._splits:
            examples = self.dataset("train")
            self._splits["train_windows"] = WindowSet(
                examples.events, examples.pos, examples.start, self.max_len
            )
        return self._splits["train_windows"]

    def train_dataloader(self) -> DataLoader:
        """Shuffled by (seed, epoch), with `length_buckets` into batches of similar length
        (LengthBucketSampler): Lightning calls the sampler's set_epoch each epoch, so a
        run resumed at epoch k sees the same order as an uninterrupted one; under several
        processes each rank takes its shard of the permutation."""
        dataset = self.train_windows() if self.training == "sequences" else self.dataset("train")
        world, rank = self._world()
        if self.length_buckets:
            sampler = LengthBucketSampler(
                dataset,
                dataset.lengths(),
                self.batch_size,
                num_replicas=world,
                rank=rank,
                seed=self.seed,
            )
        else:
            sampler = DistributedSampler(
                dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed
            )
        return self._loader(dataset, self.batch_size, sampler)

    def split_dataloader(self, name: str) -> DataLoader:
        """Examples of `name` in file order (sharded without padding across ranks)."""
        dataset = self.dataset(name)
        world, rank = self._world()
        sampler = _ShardSampler(dataset, world, rank) if world > 1 else None
        return self._loader(dataset, self.eval_batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        return self.split_dataloader("valid")

    def test_dataloader(self) -> DataLoader:
        return self.split_dataloader("test")
