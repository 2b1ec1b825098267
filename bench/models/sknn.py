"""SKNN: session-based k nearest neighbours with binary session vectors.

Ludewig and Jannach, "Evaluation of session-based recommendation algorithms", User
Modeling and User-Adapted Interaction 28 (2018); Jannach and Ludewig, "When Recurrent
Neural Networks meet the Neighborhood for Session-Based Recommendation", RecSys 2017.

The current history (its last `max_history` events, as a set of items) is compared with
the `sample_size` most recent training sessions that share an item with it; the k most
similar are the neighbours, and an item's score is the sum of the similarities of the
neighbours that contain it. Cosine is |A & B| / sqrt(|A| |B|) (session-rec's code
computes |A & B| / sqrt(|A|) * sqrt(|B|), an operator-precedence slip not followed
here); Jaccard is |A & B| / |A | B|. Ties: see bench/models/knn.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import Field

from bench.models.knn import Neighbours, Query, SessionIndex, SessionKNN, take
from bench.models.registry import register_model


@register_model
class SKNN(SessionKNN):
    name = "sknn"
    family = "baseline"
    paper = (
        "Ludewig, Jannach. Evaluation of session-based recommendation algorithms. "
        "User Modeling and User-Adapted Interaction 28, 2018"
    )

    @dataclass
    class Config:
        k: Annotated[int, Field(ge=1)] = 100  # neighbours
        sample_size: Annotated[int, Field(ge=0)] = 500  # most recent candidates; 0 = all
        similarity: Literal["cosine", "jaccard"] = "cosine"
        max_history: Annotated[int, Field(ge=1)] = 10  # last events forming the "session"
        # False: items already in the history get no score; auto: on when training
        # targets repeat their own history often enough (knn.REMIND_AUTO_MIN)
        remind: bool | Literal["auto"] = "auto"

    def similarity(
        self, cand: Neighbours, query: Query, weights: torch.Tensor, index: SessionIndex
    ) -> torch.Tensor:
        mine = take(query.n_distinct, cand.row).double()
        theirs = take(index.sess_size, cand.session).double()
        if self.config.similarity == "jaccard":
            return cand.n_shared / (mine + theirs - cand.n_shared)
        return cand.n_shared / torch.sqrt(mine * theirs)

    @staticmethod
    def search_space(trial) -> dict:
        return {
            "k": trial.suggest_categorical("k", [50, 100, 200, 500, 1000]),
            "sample_size": trial.suggest_categorical("sample_size", [500, 1000, 2500, 5000]),
            "similarity": trial.suggest_categorical("similarity", ["cosine", "jaccard"]),
            "max_history": trial.suggest_categorical("max_history", [3, 5, 10, 20, 50]),
            "remind": trial.suggest_categorical("remind", [True, False]),
        }
