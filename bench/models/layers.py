"""Building blocks shared by the attention models (SASRec, BERT4Rec).

One transformer block (Vaswani et al. 2017), in the two layer-norm placements the
papers use: SASRec puts the norm before each sublayer (`norm_first=True`), BERT4Rec
after the residual sum, as BERT does (`norm_first=False`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import ConfigError


def check_heads(dim: int, n_heads: int) -> None:
    """Heads split the embedding evenly; anything else is a configuration mistake."""
    if n_heads < 1 or dim % n_heads:
        raise ConfigError(
            f"embedding_dim {dim} is not divisible by n_heads {n_heads}",
            option="--set",
            hint="pick n_heads among the divisors of embedding_dim",
        )


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention over (B, L, d)."""

    def __init__(self, dim: int, n_heads: int, attn_dropout: float) -> None:
        super().__init__()
        check_heads(dim, n_heads)
        self.n_heads = n_heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        """`mask` (B, 1, 1, L) bool, True = key may be attended; `causal` hides the future."""
        b, length, dim = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, dim // self.n_heads).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
            is_causal=causal,
        )
        return self.proj(y.transpose(1, 2).reshape(b, length, dim))


class TransformerBlock(nn.Module):
    """Self-attention and a position-wise feed-forward net, each with dropout and a residual."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        inner_size: int,
        dropout: float,
        attn_dropout: float,
        activation: str = "gelu",
        norm_first: bool = True,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.attn = SelfAttention(dim, n_heads, attn_dropout)
        self.ffn = nn.Sequential(
            nn.Linear(dim, inner_size),
            nn.GELU() if activation == "gelu" else nn.ReLU(),
            nn.Linear(inner_size, dim),
        )
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        if self.norm_first:
            x = x + self.drop(self.attn(self.norm1(x), mask, causal))
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, mask, causal)))
        return self.norm2(x + self.drop(self.ffn(x)))


def init_transformer_(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation (normal(0, 0.02) weights, zero biases) for Linear layers."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
