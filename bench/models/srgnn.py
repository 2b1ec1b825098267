"""SR-GNN: Wu et al., "Session-based Recommendation with Graph Neural Networks", AAAI 2019.

A gated GNN over each history's item-transition graph gives every distinct item a
state; laid back out in history order, the states are read out by soft attention
conditioned on the last event (the global preference s_g) and combined with the last
event's state (the local interest s_l): s_h = W_3 [s_g; s_l] (eq. 6-8). Scores are
s_h against the tied item table. Per-event side features (behaviour, category, gap)
are added to the laid-out states, since graph nodes are distinct items, not events.
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
from bench.models.session_graph import GatedSessionGNN, history_node_states


@dataclass
class Config(ModelConfig):
    embedding_dim: Size = 100  # the paper's d
    dropout: Rate = 0.0  # the paper uses L2 only
    step: Size = 1  # GNN propagation steps
    nonhybrid: bool = False  # True: s_g alone (the reference code's --nonhybrid)


@register_model
class SRGNN(SequenceModel):
    name = "srgnn"
    family = "graph"
    paper = "Wu et al., Session-based Recommendation with Graph Neural Networks, AAAI 2019"
    Config = Config

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        d = config.embedding_dim
        self.embedding = HistoryEmbedding(config, spec)
        self.gnn = GatedSessionGNN(d, config.step)
        self.dropout = nn.Dropout(config.dropout)
        self.query_last = nn.Linear(d, d)  # W_1
        self.query_item = nn.Linear(d, d)  # W_2
        self.attention = nn.Linear(d, 1, bias=False)  # q
        self.transform = nn.Linear(2 * d, d)  # W_3

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seq, mask = history_node_states(self.embedding, self.gnn, batch, self.dropout)
        last = last_position(seq, batch["lengths"])
        alpha = self.attention(
            torch.sigmoid(self.query_last(last).unsqueeze(1) + self.query_item(seq))
        )
        global_pref = (alpha * seq * mask.unsqueeze(-1)).sum(1)
        if self.config.nonhybrid:
            return global_pref
        return self.transform(torch.cat([global_pref, last], 1))

    @staticmethod
    def search_space(trial) -> dict:
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 100, 128]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "step": trial.suggest_int("step", 1, 3),
        }
