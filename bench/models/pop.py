"""Pop: every history gets the same ranking, by training-window popularity.

The reference point of the kNN comparisons in Ludewig and Jannach, "Evaluation of
session-based recommendation algorithms", User Modeling and User-Adapted Interaction
28 (2018). An item's score is the number of its events in the training sequences;
equal counts tie (the evaluator counts ties against the target).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.models.base import Baseline, DataSpec, TrainSequences
from bench.models.registry import register_model


@register_model
class Pop(Baseline):
    name = "pop"
    family = "baseline"
    paper = (
        "Ludewig, Jannach. Evaluation of session-based recommendation algorithms. "
        "User Modeling and User-Adapted Interaction 28, 2018"
    )

    @dataclass
    class Config:
        """Pop has no hyperparameters."""

    def __init__(self, config: Pop.Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.counts: torch.Tensor | None = None

    def fit(self, train: TrainSequences) -> Pop:
        n = self.spec.n_items
        items = train.items.long().cpu()
        items = items[(items >= 1) & (items <= n)]
        self.counts = torch.bincount(items, minlength=n + 1).float()
        self.counts[0] = 0.0
        return self

    def scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.counts is None:
            raise RuntimeError("pop: call fit() before scores()")
        rows = batch["items"].size(0)
        return self.counts.to(batch["items"].device).repeat(rows, 1)
