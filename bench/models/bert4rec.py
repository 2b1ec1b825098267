"""BERT4Rec: a bidirectional transformer trained by filling in masked items.

Sun, Liu, Wu, Pei, Lin, Ou and Jiang, "BERT4Rec: Sequential Recommendation with
Bidirectional Encoder Representations from Transformer", CIKM 2019.

Training (Cloze task): the target is appended to the history, a fraction `mask_prob`
of the real positions is replaced by a [MASK] token (at least one per sequence; the
appended target when the draw picks none, the paper's "mask only the last item"
samples), and the loss is the softmax over items at the masked positions. At
inference [MASK] is appended after the last history item and its output state scores
every item. [MASK] is item row n_items + 1: an input embedding that is never scored
(`item_table` returns rows 0..n_items). Side features (behaviour, category, gap) of
masked positions are zeroed, as the appended [MASK] at inference has none.

Architecture as BERT (and the authors' code): item + learned position embeddings
(max_len + 1 positions, for the appended token), layer norm, dropout, post-norm
transformer blocks with GELU and a key-padding mask, then the output head
GELU(W h + b) with layer norm before the tied item table (the per-item output bias
of the paper is left out, so that scores stay `encode @ item_table().T`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.errors import ConfigError
from bench.models.base import (
    DataSpec,
    HistoryEmbedding,
    ModelConfig,
    Rate,
    SequenceModel,
    Size,
)
from bench.models.layers import TransformerBlock, check_heads, init_transformer_
from bench.models.registry import register_model

SIDE_FEATURES = ("behaviors", "categories", "gaps")


@register_model
class BERT4Rec(SequenceModel):
    name = "bert4rec"
    family = "attention"
    paper = (
        "Sun, Liu, Wu, Pei, Lin, Ou, Jiang. BERT4Rec: Sequential Recommendation with "
        "Bidirectional Encoder Representations from Transformer. CIKM 2019"
    )
    # Not causal, but a window is the paper's training sequence: the Cloze task masks
    # any of its items, so whole windows replace one masked copy per prefix.
    trains_on_sequences = True

    @dataclass
    class Config(ModelConfig):
        embedding_dim: Size = 64
        n_layers: Size = 2
        n_heads: Size = 2
        inner_size: Size = 256
        dropout: Rate = 0.2  # embeddings and sublayer outputs
        attn_dropout: Rate = 0.2  # attention weights
        # fraction of positions masked in training
        mask_prob: Annotated[float, Field(gt=0, le=1)] = 0.2

        def __post_init__(self) -> None:
            check_heads(self.embedding_dim, self.n_heads)  # at config time, before any data

    def __init__(self, config: BERT4Rec.Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        dim = config.embedding_dim
        check_heads(dim, config.n_heads)
        if not 0.0 < config.mask_prob <= 1.0:
            raise ConfigError(
                f"mask_prob must lie in (0, 1], got {config.mask_prob}", option="--set"
            )
        self.mask_token = spec.n_items + 1
        self.embedding = HistoryEmbedding(
            config, dataclasses.replace(spec, n_items=spec.n_items + 1)
        )
        self.positions = nn.Embedding(spec.max_len + 1, dim)
        self.input_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim,
                config.n_heads,
                config.inner_size,
                config.dropout,
                config.attn_dropout,
                activation="gelu",
                norm_first=False,
            )
            for _ in range(config.n_layers)
        )
        self.head = nn.Linear(dim, dim)
        self.head_norm = nn.LayerNorm(dim)
        init_transformer_(self)
        nn.init.normal_(self.positions.weight, std=0.02)

    def item_table(self) -> torch.Tensor:
        return self.embedding.items.weight[: self.spec.n_items + 1]  # [MASK] is not a candidate

    def hidden_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L, d) transformer output of a batch whose items may hold [MASK]."""
        length = batch["items"].size(1)
        if length > self.positions.num_embeddings:
            raise ValueError(
                f"width {length} exceeds max_len + 1 = {self.positions.num_embeddings}"
            )
        x = self.embedding(batch) + self.positions.weight[:length]
        x = self.dropout(self.input_norm(x))
        real = torch.arange(length, device=x.device) < batch["lengths"].unsqueeze(1)
        mask = real.view(real.size(0), 1, 1, length)  # keys that may be attended
        for block in self.blocks:
            x = block(x, mask=mask)
        return x

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output head, applied only where a prediction is read."""
        return self.head_norm(F.gelu(self.head(hidden)))

    def _extend(self, batch, last: torch.Tensor, masked: torch.Tensor) -> dict:
        """Append `last` at position `lengths`, put [MASK] where `masked`, zero its side features."""
        lengths = batch["lengths"]
        items = F.pad(batch["items"], (0, 1)).scatter(1, lengths.unsqueeze(1), last.unsqueeze(1))
        out = {"items": items.masked_fill(masked, self.mask_token), "lengths": lengths + 1}
        for key in SIDE_FEATURES:
            if key in batch:
                out[key] = F.pad(batch[key], (0, 1)).masked_fill(masked, 0)
        return out

    def append_mask(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inference input: the history followed by [MASK]."""
        lengths = batch["lengths"]
        width = batch["items"].size(1) + 1
        masked = torch.arange(width, device=lengths.device) == lengths.unsqueeze(1)
        return self._extend(batch, torch.full_like(lengths, self.mask_token), masked)

    def mask_batch(self, batch: dict[str, torch.Tensor]) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """The Cloze training input: (masked batch, masked (B, L + 1) bool, original items)."""
        lengths, targets = batch["lengths"], batch["targets"]
        width = batch["items"].size(1) + 1
        positions = torch.arange(width, device=lengths.device)
        real = positions < (lengths + 1).unsqueeze(1)
        masked = real & (torch.rand(real.shape, device=lengths.device) < self.config.mask_prob)
        none = ~masked.any(1, keepdim=True)
        masked = masked | (none & (positions == lengths.unsqueeze(1)))
        original = F.pad(batch["items"], (0, 1)).scatter(
            1, lengths.unsqueeze(1), targets.unsqueeze(1)
        )
        return self._extend(batch, targets, masked), masked, original

    def training_loss(self, batch: dict[str, torch.Tensor], criterion) -> torch.Tensor:
        if batch["targets"].dim() == 2:  # a window: its last target completes the sequence
            rows = torch.arange(batch["targets"].size(0), device=batch["targets"].device)
            batch = {**batch, "targets": batch["targets"][rows, batch["lengths"] - 1]}
        masked_batch, masked, original = self.mask_batch(batch)
        hidden = self.hidden_states(masked_batch)
        return criterion(self.project(hidden[masked]), original[masked])

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.hidden_states(self.append_mask(batch))
        rows = torch.arange(hidden.size(0), device=hidden.device)
        return self.project(hidden[rows, batch["lengths"]])

    @staticmethod
    def search_space(trial) -> dict:
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "n_layers": trial.suggest_int("n_layers", 1, 3),
            "n_heads": trial.suggest_categorical("n_heads", [1, 2, 4]),
            "inner_size": trial.suggest_categorical("inner_size", [64, 128, 256, 512]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "attn_dropout": trial.suggest_float("attn_dropout", 0.0, 0.5),
            "mask_prob": trial.suggest_float("mask_prob", 0.1, 0.6),
        }
