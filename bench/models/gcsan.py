"""GC-SAN: Xu et al., "Graph Contextualized Self-Attention Network for Session-based
Recommendation", IJCAI 2019.

SR-GNN's gated GNN gives each distinct item a state; laid back out in history order,
the states pass through k self-attention blocks (attention, point-wise feed-forward,
residuals); the history vector is S_f = w E_n + (1 - w) h_n, the weighted sum of the
last self-attention output and the last GNN state (the paper's omega, 0.4-0.8 works
best). The blocks are standard post-norm Transformer layers with a causal mask, as in
RecBole's GCSAN; the paper writes the same block without layer normalisation. Defaults
follow RecBole's (d 64, one block, one head, inner size 256, dropout 0.2, w 0.6).
Per-event side features (behaviour, category, gap) are added to the laid-out states.
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
    Share,
    Size,
    last_position,
)
from bench.models.layers import check_heads
from bench.models.registry import register_model
from bench.models.session_graph import GatedSessionGNN, history_node_states


@dataclass
class Config(ModelConfig):
    embedding_dim: Size = 64
    dropout: Rate = 0.2
    attn_dropout: Rate = 0.2
    step: Size = 1  # GNN propagation steps
    n_layers: Size = 1  # self-attention blocks (the paper's k)
    n_heads: Size = 1
    inner_size: Size = 256  # feed-forward width
    weight: Share = 0.6  # omega: share of the self-attention output in S_f

    def __post_init__(self) -> None:
        check_heads(self.embedding_dim, self.n_heads)  # at config time, before any data


@register_model
class GCSAN(SequenceModel):
    name = "gcsan"
    family = "graph"
    paper = (
        "Xu et al., Graph Contextualized Self-Attention Network for Session-based "
        "Recommendation, IJCAI 2019"
    )
    Config = Config

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        d = config.embedding_dim
        self.embedding = HistoryEmbedding(config, spec)
        self.gnn = GatedSessionGNN(d, config.step)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d,
                config.n_heads,
                config.inner_size,
                config.dropout,
                activation="relu",
                batch_first=True,
            )
            for _ in range(config.n_layers)
        )
        for block in self.blocks:
            block.self_attn.dropout = config.attn_dropout

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seq, mask = history_node_states(self.embedding, self.gnn, batch, self.dropout)
        lengths = batch["lengths"]
        length = seq.size(1)
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).triu(1)
        out = seq
        for block in self.blocks:
            out = block(out, src_mask=causal, src_key_padding_mask=~mask)
        w = self.config.weight
        return w * last_position(out, lengths) + (1 - w) * last_position(seq, lengths)

    @staticmethod
    def search_space(trial) -> dict:
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "attn_dropout": trial.suggest_float("attn_dropout", 0.0, 0.5),
            "step": trial.suggest_int("step", 1, 3),
            "n_layers": trial.suggest_int("n_layers", 1, 3),
            "n_heads": trial.suggest_categorical("n_heads", [1, 2]),
            "weight": trial.suggest_float("weight", 0.4, 0.8),
        }
