"""GNN-LSTM, bench's headline model: a gated GNN over each history's item-transition
graph (SR-GNN style: Wu et al., "Session-based Recommendation with Graph Neural
Networks", AAAI 2019), whose node states, laid out in the order of the history, feed
an LSTM (Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural Computation 1997).

The GNN sees the repeat and transition structure of a history at once (an item
visited from several places gets one state informed by all of them); the LSTM then
reads the events in order, which the graph alone forgets. The LSTM state at the last
real event (position length - 1) is projected to d when the LSTM width differs and
scored against the tied item table.

Side features: graph nodes are distinct items, but behaviour type, category and time
gap belong to events (the same item viewed, then carted). So the GNN runs on item
embeddings only, and the per-event side-feature embeddings are added to the node
states after they are laid out in history order, before the LSTM.
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
    embedding_dim: Size = 64
    dropout: Rate = 0.2
    step: Size = 1  # GNN propagation steps
    lstm_hidden: Size | None = None  # None: embedding_dim (no output projection)
    lstm_layers: Size = 1


@register_model
class GNNLSTM(SequenceModel):
    name = "gnn_lstm"
    family = "graph"
    paper = (
        "bench's own: SR-GNN's gated GNN (Wu et al., AAAI 2019) feeding an LSTM "
        "(Hochreiter & Schmidhuber, Neural Computation 1997)"
    )
    Config = Config

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        d = config.embedding_dim
        hidden = config.lstm_hidden or d
        self.embedding = HistoryEmbedding(config, spec)
        self.gnn = GatedSessionGNN(d, config.step)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            d,
            hidden,
            num_layers=config.lstm_layers,
            batch_first=True,
            dropout=config.dropout if config.lstm_layers > 1 else 0.0,
        )
        self.project = nn.Linear(hidden, d) if hidden != d else nn.Identity()

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seq, _ = history_node_states(self.embedding, self.gnn, batch, self.dropout)
        out, _ = self.lstm(seq)
        return self.project(self.dropout(last_position(out, batch["lengths"])))

    @staticmethod
    def search_space(trial) -> dict:
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "step": trial.suggest_int("step", 1, 3),
            "lstm_hidden": trial.suggest_categorical("lstm_hidden", [64, 128, 256]),
            "lstm_layers": trial.suggest_int("lstm_layers", 1, 2),
        }
