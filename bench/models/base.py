"""The model contract shared by every model, neural or not.

A batch is the dict of tensors declared in `bench.contract` (`Batch`: items, behaviors,
categories, gaps, lengths, targets, ...), served by `bench.datasets.datamodule`.

A neural model maps a batch to one vector per history (`encode`); scores are that
vector against the tied item embedding table (`item_table`). Row 0 of the table is
padding and is never a valid prediction (the evaluator masks it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import nn

# The data contract lives in bench.contract (below datasets and models); its names stay
# importable from here, where model code has always found them.
from bench.contract import (  # noqa: F401  (re-exported)
    N_BEHAVIORS,
    N_GAP_BUCKETS,
    DataSpec,
    TrainSequences,
    gap_bucket,
)

# Field constraints of model configs: checked with the rest of the configuration, before
# any data is read or any run folder is made (a zero width or a dropout of 2 would
# otherwise crash deep inside torch).
Size = Annotated[int, Field(ge=1)]  # widths, layers, heads, steps
Rate = Annotated[float, Field(ge=0, lt=1)]  # dropout probabilities
Share = Annotated[float, Field(ge=0, le=1)]  # mixing weights


@dataclass
class ModelConfig:
    """Hyperparameters common to the neural models; each model extends it."""

    embedding_dim: Size = 64
    dropout: Rate = 0.2
    use_behavior: bool = True  # add a behaviour-type embedding to each history event
    use_category: bool = False  # add the item's category embedding
    use_time_gap: bool = False  # add a bucketed time-gap embedding


class HistoryEmbedding(nn.Module):
    """Item embedding plus the side features switched on in the config, summed.

    The item table is the one used for scoring (tied weights).
    """

    def __init__(self, config: ModelConfig, spec: DataSpec, dim: int | None = None) -> None:
        super().__init__()
        dim = dim or config.embedding_dim
        self.items = nn.Embedding(spec.n_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.items.weight, std=dim**-0.5)
        with torch.no_grad():
            self.items.weight[0].zero_()
        use = getattr(config, "use_behavior", False) and spec.has_behavior
        self.behaviors = nn.Embedding(N_BEHAVIORS + 1, dim, padding_idx=0) if use else None
        use = getattr(config, "use_category", False) and spec.has_category
        self.categories = nn.Embedding(spec.n_categories + 1, dim, padding_idx=0) if use else None
        use = getattr(config, "use_time_gap", False) and spec.has_time
        self.gaps = nn.Embedding(N_GAP_BUCKETS, dim, padding_idx=0) if use else None
        for table in (self.behaviors, self.categories, self.gaps):
            if table is not None:
                nn.init.normal_(table.weight, std=0.02)
                with torch.no_grad():
                    table.weight[0].zero_()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.items(batch["items"])
        if self.behaviors is not None:
            out = out + self.behaviors(batch["behaviors"])
        if self.categories is not None:
            out = out + self.categories(batch["categories"])
        if self.gaps is not None:
            out = out + self.gaps(batch["gaps"])
        return out


def last_position(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """hidden (B, L, d) -> the state at the last real event of each history, (B, d)."""
    index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, hidden.size(-1))
    return hidden.gather(1, index).squeeze(1)


class SequenceModel(nn.Module):
    """Base of the neural models. Subclasses define `encode` and keep `self.embedding`."""

    name: ClassVar[str]
    family: ClassVar[str]  # baseline | recurrent | attention | graph
    paper: ClassVar[str]
    Config: ClassVar[type] = ModelConfig
    neural: ClassVar[bool] = True
    # True when output j depends only on events 0..j (`encode_positions`), so a whole
    # window trains at once (`training="sequences"`, see datamodule.WindowSet).
    trains_on_sequences: ClassVar[bool] = False
    # The mode a run trains in when its settings name none. "sequences" only where whole
    # windows reached prefix training's test accuracy on ml-100k and diginetica-dynamicrec
    # (BENCHMARKS.md "Is whole-sequence training the default?"); it brings that mode's
    # batch, learning rate and budget (training.config.MODE_DEFAULTS).
    default_training: ClassVar[str] = "prefixes"

    def __init__(self, config: ModelConfig, spec: DataSpec) -> None:
        super().__init__()
        self.config = config
        self.spec = spec

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def encode_positions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L, d): the history vector after each event, for models that are causal."""
        raise NotImplementedError(f"{self.name} reads whole histories; train it on prefixes")

    def item_table(self) -> torch.Tensor:
        """(n_items + 1, d) output embeddings, tied to the input item embeddings."""
        return self.embedding.items.weight

    def scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encode(batch) @ self.item_table().T

    def training_loss(self, batch: dict[str, torch.Tensor], criterion) -> torch.Tensor:
        """`criterion(hidden (N, d), targets (N,))` is full or sampled softmax; BERT4Rec overrides.

        Targets (B,) are one per history; (B, L) are one per position of a window, 0 for none.
        """
        targets = batch["targets"]
        if targets.dim() == 2:
            predicted = targets > 0
            return criterion(self.encode_positions(batch)[predicted], targets[predicted])
        return criterion(self.encode(batch), targets)

    @staticmethod
    def search_space(trial) -> dict:
        """Optuna search space: suggest values on `trial`, return config overrides."""
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        }

    @classmethod
    def defaults(cls) -> dict:
        return dataclasses.asdict(cls.Config())


class Baseline:
    """Base of the non-neural models (pop, kNN): `fit` on training sequences, then score."""

    name: ClassVar[str]
    family: ClassVar[str] = "baseline"
    paper: ClassVar[str]
    Config: ClassVar[type]
    neural: ClassVar[bool] = False

    def __init__(self, config, spec: DataSpec) -> None:
        self.config = config
        self.spec = spec

    def fit(self, train: TrainSequences) -> Baseline:
        raise NotImplementedError

    def scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, n_items + 1) scores; higher is better; column 0 is ignored."""
        raise NotImplementedError

    def fit_summary(self) -> dict:
        """Settings `fit` decided from the data (recorded in the run's result)."""
        return {}

    @staticmethod
    def search_space(trial) -> dict:
        return {}

    @classmethod
    def defaults(cls) -> dict:
        return dataclasses.asdict(cls.Config())
