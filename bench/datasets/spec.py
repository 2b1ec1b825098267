"""What a model is built from, read from a prepared artifact: its DataSpec and the
training sequences. Free of Lightning, so prediction and serving start without it;
`SequenceDataModule` reads through the same functions, so both see the same data."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from bench.contract import DataSpec, TrainSequences
from bench.datasets.schema import SPLITS
from bench.errors import DataError

DEFAULT_MAX_LEN = 50  # history length when neither the run nor the protocol sets one


def artifact_file(artifact: Path, name: str) -> Path:
    """A file of the artifact; a missing one names the file and how to rebuild it."""
    path = Path(artifact) / name
    if not path.exists():
        raise DataError(
            f"artifact is incomplete: {name} is missing",
            file=path,
            hint=f"rebuild it with `bench data prepare ... --force` (artifact folder: {artifact})",
        )
    return path


def artifact_max_len(meta: dict) -> int:
    """The protocol's history length (its max_len parameter), else the default."""
    params = meta.get("params") or {}
    return int(params.get("max_len") or meta.get("max_len") or DEFAULT_MAX_LEN)


def event_flags(artifact: Path, meta: dict, need_max: bool) -> tuple[int, int]:
    """(distinct behaviours, a category value that is > 0 iff some event has a known
    category; the largest one when `need_max`). From meta.json's counts when it has
    them (prepare writes them), else by a scan of events.parquet (hand-made artifacts)."""
    counts = meta.get("counts") or {}
    behaviors = counts.get("behaviors")
    per_split = [counts.get(s, {}).get("categories") for s in SPLITS]
    if not need_max and isinstance(behaviors, dict) and all(isinstance(c, int) for c in per_split):
        return sum(1 for n in behaviors.values() if n), max(per_split)
    flags = (
        pl.scan_parquet(artifact_file(artifact, "events.parquet"))
        .select(
            pl.col("behavior").n_unique().alias("behaviors"),
            pl.col("category").max().alias("max_category"),
        )
        .collect()
    )
    return int(flags["behaviors"][0]), int(flags["max_category"][0] or 0)


def read_spec(artifact: str | Path, meta: dict, max_len: int | None = None) -> DataSpec:
    """Sizes and feature flags of the prepared data, for building a model."""
    artifact = Path(artifact)
    items = pl.read_parquet(
        artifact_file(artifact, "items.parquet"), columns=["item", "train_count"]
    )
    counts = torch.zeros(items.height + 1, dtype=torch.long)
    counts[items["item"].cast(pl.Int64).to_torch()] = items["train_count"].cast(pl.Int64).to_torch()
    categories = artifact / "categories.parquet"
    behaviors, max_category = event_flags(artifact, meta, need_max=not categories.exists())
    n_categories = (
        pl.scan_parquet(categories).select(pl.len()).collect().item()
        if categories.exists()
        else max_category
    )
    return DataSpec(
        n_items=items.height,
        n_categories=n_categories,
        max_len=int(max_len) if max_len else artifact_max_len(meta),
        has_behavior=behaviors > 1,
        has_category=max_category > 0,
        has_time=bool(meta.get("has_time", True)),
        item_counts=counts,
    )


def read_train_sequences(artifact: str | Path) -> TrainSequences:
    """Training-window events of each sequence in time order (CSR), for kNN baselines."""
    frame = (
        pl.scan_parquet(artifact_file(Path(artifact), "events.parquet"))
        .filter(pl.col("split") == 0)
        .select(
            pl.col("seq").cast(pl.Int64),
            pl.col("item").cast(pl.Int64),
            pl.col("behavior").cast(pl.Int64),
            pl.col("ts").cast(pl.Int64),
        )
        .collect()
    )
    _, counts = torch.unique_consecutive(frame["seq"].to_torch(), return_counts=True)
    offsets = torch.zeros(counts.numel() + 1, dtype=torch.long)
    torch.cumsum(counts, 0, out=offsets[1:])
    return TrainSequences(
        items=frame["item"].to_torch(),
        behaviors=frame["behavior"].to_torch(),
        ts=frame["ts"].to_torch(),
        offsets=offsets,
    )
