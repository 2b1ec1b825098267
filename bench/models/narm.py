"""NARM: a GRU encoder with a global (last state) and a local (attention) summary.

Li, Ren, Chen, Ren, Lian and Ma, "Neural Attentive Session-based Recommendation",
CIKM 2017. The global encoder's last state h_t summarises the whole sequence; the
local encoder attends over all states, alpha_tj = v^T sigmoid(A1 h_j + A2 h_t); the
concatenation c_t = [c_local; h_t] goes through the bilinear decoder B, so that the
score of item i is emb_i^T B c_t and `encode` returns B c_t (d-dimensional).
Dropout 0.25 on the item embeddings and 0.5 on c_t, as in the paper and RecBole.
Padded positions get zero attention weight.
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
class NARM(SequenceModel):
    name = "narm"
    family = "recurrent"
    paper = "Li, Ren, Chen, Ren, Lian, Ma. Neural Attentive Session-based Recommendation. CIKM 2017"
    trains_on_sequences = True  # a prefix's output needs only the GRU states up to it

    @dataclass
    class Config(ModelConfig):
        embedding_dim: Size = 64
        hidden_size: Size = 128
        num_layers: Size = 1
        dropout: Rate = 0.25  # on the input embeddings
        context_dropout: Rate = 0.5  # on c_t, before the bilinear decoder

    def __init__(self, config: NARM.Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        hidden = config.hidden_size
        self.embedding = HistoryEmbedding(config, spec)
        self.dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(config.embedding_dim, hidden, config.num_layers, batch_first=True)
        self.a1 = nn.Linear(hidden, hidden, bias=False)
        self.a2 = nn.Linear(hidden, hidden, bias=False)
        self.v = nn.Linear(hidden, 1, bias=False)
        self.context_dropout = nn.Dropout(config.context_dropout)
        self.bilinear = nn.Linear(2 * hidden, config.embedding_dim, bias=False)  # B

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        states, _ = self.gru(self.dropout(self.embedding(batch)))  # (B, L, H)
        h_t = last_position(states, batch["lengths"])  # global encoder
        alpha = self.v(torch.sigmoid(self.a1(states) + self.a2(h_t).unsqueeze(1)))  # (B, L, 1)
        positions = torch.arange(states.size(1), device=states.device)
        real = (positions < batch["lengths"].unsqueeze(1)).unsqueeze(-1)
        c_local = (alpha * states).masked_fill(~real, 0.0).sum(1)
        c_t = self.context_dropout(torch.cat([c_local, h_t], dim=-1))
        return self.bilinear(c_t)

    def encode_positions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every prefix at once: position t attends over states 0..t with query h_t."""
        states, _ = self.gru(self.dropout(self.embedding(batch)))  # (B, L, H)
        keys, queries = self.a1(states), self.a2(states)
        alpha = self.v(torch.sigmoid(keys.unsqueeze(1) + queries.unsqueeze(2))).squeeze(-1)
        width = states.size(1)
        causal = torch.ones(width, width, dtype=torch.bool, device=states.device).tril()
        c_local = alpha.masked_fill(~causal, 0.0) @ states  # (B, L, L) @ (B, L, H)
        return self.bilinear(self.context_dropout(torch.cat([c_local, states], dim=-1)))

    @staticmethod
    def search_space(trial) -> dict:
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "hidden_size": trial.suggest_categorical("hidden_size", [64, 128, 256]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "context_dropout": trial.suggest_float("context_dropout", 0.0, 0.6),
        }
