"""V-SKNN: session kNN with position-decayed history weights and neighbour decay.

Ludewig and Jannach, "Evaluation of session-based recommendation algorithms", User
Modeling and User-Adapted Interaction 28 (2018), as in session-rec's VMContextKNN.

In the history window of n events, the item whose last occurrence is at position i
(1-based) weighs w(i): "div" i / n (the paper's linear decay: the last event weighs 1),
"quadratic" (i / n)^2, "log" 1 / log10(n - i + 1.7), "same" 1. The similarity to a
neighbour session is the sum of the weights of the shared items divided by the number
of distinct history items ("vec", session-rec's choice; the divisor is the same for all
neighbours), or that sum over (||w|| sqrt(|session|)) ("cosine"). A neighbour's items
score sim * d(step), step = 1 + how many events before the end the most recent shared
item sits; d: "div" 1 / step, "quadratic" 1 / step^2, "log" 1 / log10(step + 1.7),
"same" 1. With `idf_weighting` > 0 an item's contribution is multiplied by
(1 + idf_weighting * log(sessions / sessions holding the item)): session-rec's IDF
option, with document frequency counted in sessions (session-rec counts events, which
goes negative for items repeated within sessions). session-rec's "linear" variants
(1 - 0.1 * distance, negative past 10 steps) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import Field

from bench.models.base import TrainSequences
from bench.models.knn import Neighbours, Query, SessionIndex, SessionKNN, take
from bench.models.registry import register_model

Decay = Literal["div", "quadratic", "log", "same"]


def position_weight(kind: str, pos: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """w(i) of the history item last seen at position `pos` of a window of `length`."""
    pos, length = pos.double(), length.double()
    if kind == "div":
        return pos / length
    if kind == "quadratic":
        return (pos / length) ** 2
    if kind == "log":
        return 1.0 / torch.log10(length - pos + 1.7)
    return torch.ones_like(pos)


def step_decay(kind: str, step: torch.Tensor) -> torch.Tensor:
    """d(step) for a neighbour matched `step` events from the end (1 = the last event)."""
    step = step.double()
    if kind == "div":
        return 1.0 / step
    if kind == "quadratic":
        return 1.0 / step**2
    if kind == "log":
        return 1.0 / torch.log10(step + 1.7)
    return torch.ones_like(step)


@register_model
class VSKNN(SessionKNN):
    name = "vsknn"
    family = "baseline"
    paper = (
        "Ludewig, Jannach. Evaluation of session-based recommendation algorithms. "
        "User Modeling and User-Adapted Interaction 28, 2018"
    )
    needs_qpos = True

    @dataclass
    class Config:
        k: Annotated[int, Field(ge=1)] = 100  # neighbours
        sample_size: Annotated[int, Field(ge=0)] = 500  # most recent candidates; 0 = all
        weighting: Decay = "div"  # history position weights
        weighting_score: Decay = "div"  # neighbour decay by the matched step
        similarity: Literal["vec", "cosine"] = "vec"
        idf_weighting: Annotated[float, Field(ge=0)] = 0.0  # 0 = off
        max_history: Annotated[int, Field(ge=1)] = 50  # last events forming the "session"
        # False: items already in the history get no score; auto: on when training
        # targets repeat their own history often enough (knn.REMIND_AUTO_MIN)
        remind: bool | Literal["auto"] = "auto"

    def fitted(self, train: TrainSequences) -> None:
        sessions = max(int((self.index.sess_size > 0).sum()), 1)  # non-empty ones
        df = self.index.item_count.double().clamp(min=1)
        self.idf = torch.log(sessions / df)

    def query_weights(self, query: Query) -> torch.Tensor:
        return position_weight(self.config.weighting, query.pos, query.length[query.row])

    def similarity(
        self, cand: Neighbours, query: Query, weights: torch.Tensor, index: SessionIndex
    ) -> torch.Tensor:
        if self.config.similarity == "cosine":
            norm = torch.zeros(query.length.numel(), dtype=torch.float64, device=weights.device)
            norm.index_add_(0, query.row, weights**2)
            size = take(index.sess_size, cand.session).double()
            return cand.dot / torch.sqrt(take(norm, cand.row) * size)
        return cand.dot / take(query.n_distinct, cand.row).double()

    def neighbour_weight(self, nb: Neighbours, query: Query) -> torch.Tensor:
        step = take(query.length, nb.row).double() - nb.max_qpos + 1
        return nb.sim * step_decay(self.config.weighting_score, step)

    def item_scale(self) -> torch.Tensor | None:
        if self.config.idf_weighting <= 0:
            return None
        return 1.0 + self.config.idf_weighting * self.idf

    @staticmethod
    def search_space(trial) -> dict:
        decays = ["div", "quadratic", "log", "same"]
        return {
            "k": trial.suggest_categorical("k", [50, 100, 200, 500, 1000]),
            "sample_size": trial.suggest_categorical("sample_size", [500, 1000, 2500, 5000]),
            "weighting": trial.suggest_categorical("weighting", decays),
            "weighting_score": trial.suggest_categorical("weighting_score", decays),
            "similarity": trial.suggest_categorical("similarity", ["vec", "cosine"]),
            "idf_weighting": trial.suggest_categorical("idf_weighting", [0.0, 1.0, 2.0, 5.0, 10.0]),
            "max_history": trial.suggest_categorical("max_history", [5, 10, 20, 50]),
            "remind": trial.suggest_categorical("remind", [True, False]),
        }
