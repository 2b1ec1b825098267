"""SASRec: causal self-attention over the history, read at the last real event.

Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018. Item plus
learned positional embeddings, dropout, a stack of blocks that each apply layer norm
before causal multi-head self-attention and before a point-wise feed-forward net
(dropout and a residual around each), a final layer norm; the output at the last
real position scores every item through the tied item table.

Histories are left-aligned (positions 0..len-1), so every pad sits after the last
real event: the causal mask alone keeps pads out of every real position's
attention, which lets the fused causal kernel run without a per-batch mask.
Sizes follow RecBole's defaults (2 blocks, 2 heads, inner 256). Dropout is 0.2 on
both the hidden states and the attention weights (the paper's value for ML-1M), not
RecBole's 0.5: on ml-100k (user-loo, whole-sequence training at batch 64, lr 2e-3,
patience 10) 0.5 tested at NDCG@10 0.0464 / 0.0515 (seeds 0 / 1) and stopped by epoch
11-15, 0.2 at 0.0642 / 0.0583 (BENCHMARKS.md, "Accuracy against RecBole 1.2.1: bench's
default run").

It trains on whole sequences by default (a loss at every position of a window, batch 64,
lr 2e-3), as the paper does: on ml-100k that reached test NDCG@10 0.0623 ± 0.0035 (3
seeds) against 0.0609 on prefixes, at 5.2 instead of 103 CPU s an epoch, and on
diginetica-dynamicrec 0.2145 / 0.2150 (seeds 0 / 1) against 0.2063 in 10 epochs
(BENCHMARKS.md "Is whole-sequence training the default?").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.models.base import (
    DataSpec,
    HistoryEmbedding,
    ModelConfig,
    Rate,
    SequenceModel,
    Size,
    last_position,
)
from bench.models.layers import TransformerBlock, check_heads, init_transformer_
from bench.models.registry import register_model


@register_model
class SASRec(SequenceModel):
    name = "sasrec"
    family = "attention"
    paper = "Kang, McAuley. Self-Attentive Sequential Recommendation. ICDM 2018"
    trains_on_sequences = True  # the paper's training: a loss at every position
    default_training = "sequences"

    @dataclass
    class Config(ModelConfig):
        embedding_dim: Size = 64
        n_layers: Size = 2
        n_heads: Size = 2
        inner_size: Size = 256
        dropout: Rate = 0.2  # embeddings and sublayer outputs (see the docstring)
        attn_dropout: Rate = 0.2  # attention weights

        def __post_init__(self) -> None:
            check_heads(self.embedding_dim, self.n_heads)  # at config time, before any data

    def __init__(self, config: SASRec.Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        dim = config.embedding_dim
        check_heads(dim, config.n_heads)
        self.embedding = HistoryEmbedding(config, spec)
        self.positions = nn.Embedding(spec.max_len, dim)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim,
                config.n_heads,
                config.inner_size,
                config.dropout,
                config.attn_dropout,
                activation="gelu",
                norm_first=True,
            )
            for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(dim)
        init_transformer_(self.blocks)
        nn.init.normal_(self.positions.weight, std=dim**-0.5)  # the item table's scale

    def _blocks_out(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        length = batch["items"].size(1)
        if length > self.positions.num_embeddings:
            raise ValueError(f"history width {length} exceeds max_len {self.spec.max_len}")
        x = self.dropout(self.embedding(batch) + self.positions.weight[:length])
        for block in self.blocks:
            x = block(x, causal=True)
        return x

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # the norm is per position, so it runs only where the output is read
        return self.norm(last_position(self._blocks_out(batch), batch["lengths"]))

    def encode_positions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.norm(self._blocks_out(batch))

    @staticmethod
    def search_space(trial) -> dict:
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "n_layers": trial.suggest_int("n_layers", 1, 3),
            "n_heads": trial.suggest_categorical("n_heads", [1, 2, 4]),
            "inner_size": trial.suggest_categorical("inner_size", [64, 128, 256, 512]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.6),
            "attn_dropout": trial.suggest_float("attn_dropout", 0.0, 0.6),
        }
