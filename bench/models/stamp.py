"""STAMP: short-term attention/memory priority.

Liu, Zeng, Mokhosi and Zhang, "STAMP: Short-Term Attention/Memory Priority Model for
Session-based Recommendation", KDD 2018. No recurrence: the general interest m_s is
the mean of the history embeddings, the current interest m_t the last one. An
attention net alpha_i = w0^T sigmoid(W1 x_i + W2 x_t + W3 m_s + b_a) pools the history
into m_a; two MLPs give h_s = tanh(W_s m_a + b_s) and h_t = tanh(W_t m_t + b_t), and
the trilinear score <h_s, h_t, x_i> is the dot product of `encode` = h_s * h_t with
the item table. As in the authors' code and RecBole, m_a also adds m_s to the
attention-pooled vector, and weight matrices start from N(0, 0.05^2).
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
class STAMP(SequenceModel):
    name = "stamp"
    family = "attention"
    paper = (
        "Liu, Zeng, Mokhosi, Zhang. STAMP: Short-Term Attention/Memory Priority Model for "
        "Session-based Recommendation. KDD 2018"
    )

    @dataclass
    class Config(ModelConfig):
        embedding_dim: Size = 64
        dropout: Rate = 0.0  # on the history embeddings; the paper uses none

    def __init__(self, config: STAMP.Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        dim = config.embedding_dim
        self.embedding = HistoryEmbedding(config, spec)
        self.dropout = nn.Dropout(config.dropout)
        self.w1 = nn.Linear(dim, dim, bias=False)
        self.w2 = nn.Linear(dim, dim, bias=False)
        self.w3 = nn.Linear(dim, dim, bias=True)  # its bias is b_a
        self.w0 = nn.Linear(dim, 1, bias=False)
        self.mlp_s = nn.Linear(dim, dim)
        self.mlp_t = nn.Linear(dim, dim)
        for layer in (self.w0, self.w1, self.w2, self.w3, self.mlp_s, self.mlp_t):
            nn.init.normal_(layer.weight, std=0.05)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.dropout(self.embedding(batch))  # (B, L, d)
        lengths = batch["lengths"]
        real = torch.arange(x.size(1), device=x.device) < lengths.unsqueeze(1)  # (B, L)
        x = x * real.unsqueeze(-1)
        m_t = last_position(x, lengths)
        m_s = x.sum(1) / lengths.unsqueeze(1).to(x.dtype)
        alpha = self.w0(torch.sigmoid(self.w1(x) + (self.w2(m_t) + self.w3(m_s)).unsqueeze(1)))
        m_a = (alpha * x).sum(1) + m_s  # padded x are zero, so they add nothing
        h_s = torch.tanh(self.mlp_s(m_a))
        h_t = torch.tanh(self.mlp_t(m_t))
        return h_s * h_t

    @staticmethod
    def search_space(trial) -> dict:
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        }
