"""A tiny neural model with exact integer scores, for tests that check metrics against a
plain-Python count through the LightningModule (ties and all)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.models.base import DataSpec, HistoryEmbedding, ModelConfig, SequenceModel


@dataclass
class TinyConfig(ModelConfig):
    embedding_dim: int = 4
    use_behavior: bool = False


class LastItem(SequenceModel):
    """History vector = its last item's embedding; integer weights keep every score exact."""

    name, family, paper = "last_item", "test", "-"

    def __init__(self, spec: DataSpec, seed: int = 0):
        super().__init__(TinyConfig(), spec)
        self.embedding = HistoryEmbedding(self.config, spec)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.embedding.items.weight.copy_(
                torch.randint(-2, 3, self.embedding.items.weight.shape, generator=gen)
            )

    def encode(self, batch):
        hidden = self.embedding(batch)
        index = (batch["lengths"] - 1).view(-1, 1, 1).expand(-1, 1, hidden.size(-1))
        return hidden.gather(1, index).squeeze(1)
