"""STAN: sequence- and time-aware neighbourhood.

Garg, Gupta, Malhotra, Vig and Shroff, "Sequence and Time Aware Neighborhood for
Session-based Recommendations: STAN", SIGIR 2019 (as in session-rec's STAN).

Three exponential decays on top of session kNN:
- history item weights: the item last seen at position i of an n-event window weighs
  w(i) = exp((i - n) / lambda_spw); similarity = sum of w over shared items divided
  by (||w|| sqrt(|session|)), a weighted cosine;
- neighbour recency: the similarity is multiplied by exp(-(t_now - t_session) /
  lambda_snh), lambda_snh in days, t_session the session's last event. Batches carry no
  clock time, so t_now is the latest training timestamp. For one history the true
  t_now would only multiply all its neighbours by the same constant, so the neighbours
  chosen and the ranking of items are the same as with the history's own time;
- neighbour item position: a neighbour's item at last position p scores
  sim * exp(-|p - p*| / lambda_inh), p* the last position in the neighbour of any item
  of the history.
Set a lambda very large to switch its decay off. Ties: see bench/models/knn.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import Field

from bench.models.base import TrainSequences
from bench.models.knn import Neighbours, Query, SessionIndex, SessionKNN, take
from bench.models.registry import register_model

DAY = 24 * 3600


@register_model
class STAN(SessionKNN):
    name = "stan"
    family = "baseline"
    paper = (
        "Garg, Gupta, Malhotra, Vig, Shroff. Sequence and Time Aware Neighborhood for "
        "Session-based Recommendations: STAN. SIGIR 2019"
    )
    needs_spos = True
    pairwise_items = True

    @dataclass
    class Config:
        k: Annotated[int, Field(ge=1)] = 100  # neighbours
        sample_size: Annotated[int, Field(ge=0)] = 5000  # most recent candidates; 0 = all
        lambda_spw: Annotated[float, Field(gt=0)] = 1.02  # history position decay (events)
        lambda_snh: Annotated[float, Field(gt=0)] = 5.0  # neighbour recency decay (days)
        lambda_inh: Annotated[float, Field(gt=0)] = 2.05  # neighbour item position decay
        max_history: Annotated[int, Field(ge=1)] = 50  # last events forming the "session"
        # False: items already in the history get no score; auto: on when training
        # targets repeat their own history often enough (knn.REMIND_AUTO_MIN)
        remind: bool | Literal["auto"] = "auto"

    def fitted(self, train: TrainSequences) -> None:
        ts = train.ts
        self.now = int(ts.max()) if ts.numel() else 0

    def query_weights(self, query: Query) -> torch.Tensor:
        diff = query.pos.double() - query.length[query.row].double()
        return torch.exp(diff / self.config.lambda_spw)

    def similarity(
        self, cand: Neighbours, query: Query, weights: torch.Tensor, index: SessionIndex
    ) -> torch.Tensor:
        norm = torch.zeros(query.length.numel(), dtype=torch.float64, device=weights.device)
        norm.index_add_(0, query.row, weights**2)
        size = take(index.sess_size, cand.session).double()
        age = (self.now - take(index.sess_time, cand.session)).double()
        decay = torch.exp(-age / (self.config.lambda_snh * DAY))
        return cand.dot / torch.sqrt(take(norm, cand.row) * size) * decay

    def item_factor(self, nb: Neighbours, owner, item, lastpos) -> torch.Tensor:
        gap = (lastpos.double() - take(nb.max_spos, owner)).abs()
        return torch.exp(-gap / self.config.lambda_inh)

    @staticmethod
    def search_space(trial) -> dict:
        return {
            "k": trial.suggest_categorical("k", [50, 100, 200, 500, 1000]),
            "sample_size": trial.suggest_categorical("sample_size", [1000, 2500, 5000, 10000]),
            "lambda_spw": trial.suggest_float("lambda_spw", 0.25, 50.0, log=True),
            "lambda_snh": trial.suggest_float("lambda_snh", 0.25, 100.0, log=True),
            "lambda_inh": trial.suggest_float("lambda_inh", 0.25, 50.0, log=True),
            "max_history": trial.suggest_categorical("max_history", [5, 10, 20, 50]),
            "remind": trial.suggest_categorical("remind", [True, False]),
        }
