"""GRU4Rec: a GRU over the history; its last state, projected to d, scores every item.

Hidasi, Karatzoglou, Baltrunas and Tikk, "Session-based Recommendations with
Recurrent Neural Networks", ICLR 2016; Hidasi and Karatzoglou, "Recurrent Neural
Networks with Top-k Gains for Session-based Recommendations", CIKM 2018.

Laid out as RecBole's GRU4Rec (item embedding, dropout, GRU, dense layer back to the
embedding size, state at the last real event), trained with the suite's full softmax
cross-entropy over the tied item table. Histories are left-aligned, so padding sits
after the last real event and never reaches the state read at `lengths - 1`.

It trains on whole sequences by default (a loss at every position of a window, batch 64,
lr 2e-3): on ml-100k that reached test NDCG@10 0.0743 ± 0.0023 (3 seeds) against 0.0699
on prefixes, at 6.6 instead of 36.5 CPU s an epoch, and on diginetica-dynamicrec 0.2138
against 0.2028 in 10 epochs (BENCHMARKS.md "Is whole-sequence training the default?").
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
from bench.models.registry import register_model


@register_model
class GRU4Rec(SequenceModel):
    name = "gru4rec"
    family = "recurrent"
    paper = (
        "Hidasi, Karatzoglou, Baltrunas, Tikk. Session-based Recommendations with Recurrent "
        "Neural Networks. ICLR 2016"
    )

    @dataclass
    class Config(ModelConfig):
        embedding_dim: Size = 64
        hidden_size: Size = 128
        num_layers: Size = 1
        dropout: Rate = 0.3  # on the input embeddings

    cell: type[nn.RNNBase] = nn.GRU  # the LSTM baseline swaps the cell, nothing else
    trains_on_sequences = True
    default_training = "sequences"

    def __init__(self, config: GRU4Rec.Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.embedding = HistoryEmbedding(config, spec)
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = self.cell(
            config.embedding_dim, config.hidden_size, config.num_layers, batch_first=True
        )
        self.dense = nn.Linear(config.hidden_size, config.embedding_dim)
        for name, weight in self.rnn.named_parameters():
            if name.startswith("weight"):
                nn.init.xavier_uniform_(weight)

    def _states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.rnn(self.dropout(self.embedding(batch)))[0]

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.dense(last_position(self._states(batch), batch["lengths"]))

    def encode_positions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.dense(self._states(batch))

    @staticmethod
    def search_space(trial) -> dict:
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "hidden_size": trial.suggest_categorical("hidden_size", [64, 128, 256]),
            "num_layers": trial.suggest_int("num_layers", 1, 2),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        }
