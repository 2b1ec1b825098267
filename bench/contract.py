"""The batch contract between the data layer and the models.

It lives below both `bench.datasets` and `bench.models` so that data never imports
models to learn what it must serve: the DataModule builds what is declared here, the
models read it. Only torch is imported; nothing from bench.

A batch is a dict of int64 tensors (`Batch`). B is the batch size, L the longest history
in the batch (at most the protocol's max_len); histories are left-aligned, 0 = padding.
"""

# No `from __future__ import annotations`: on Python 3.11 TypedDict sees `NotRequired` only
# in annotations evaluated at class creation.
from dataclasses import dataclass
from typing import NotRequired, TypedDict

import torch
from torch import Tensor

N_BEHAVIORS = 4  # pv, fav, cart, buy
N_GAP_BUCKETS = 33  # 0 pad, 1 first event, 2 + floor(log2(1 + seconds)) capped at 32


class HistoryBatch(TypedDict):
    """What a model reads to score the next item: the histories and their side features."""

    items: Tensor  # (B, L) history item indices, 1..n_items; 0 = padding
    behaviors: Tensor  # (B, L) 1..4 = pv, fav, cart, buy; 0 = padding
    categories: Tensor  # (B, L) 1..n_categories; 0 = padding or unknown
    gaps: Tensor  # (B, L) time gap to the previous event, bucketed by `gap_bucket`
    lengths: Tensor  # (B,) number of real history events, >= 1


class Batch(HistoryBatch):
    """A DataModule batch: the histories plus what they are scored against."""

    # (B,) the item to predict, 1..n_items; under training="sequences" (B, L), one target
    # per window position, 0 where there is none.
    targets: Tensor
    target_behaviors: Tensor  # shaped like targets: the behaviour of each target event
    # (B, S) frozen negatives of valid / test examples, only for artifacts prepared with
    # sampled_negatives; sampled metrics rank the target against them alone.
    negatives: NotRequired[Tensor]


HISTORY_KEYS = frozenset(HistoryBatch.__annotations__)
BATCH_KEYS = frozenset(Batch.__annotations__)


def gap_bucket(gap_seconds: Tensor, first: Tensor) -> Tensor:
    """Bucket time gaps on a log2 scale; `first` marks events with no predecessor."""
    buckets = 2 + torch.floor(torch.log2(1 + gap_seconds.clamp(min=0).double())).long()
    buckets = buckets.clamp(max=N_GAP_BUCKETS - 1)
    return torch.where(first, torch.ones_like(buckets), buckets)


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about the prepared data."""

    n_items: int  # item indices are 1..n_items; tables have n_items + 1 rows
    n_categories: int = 0
    max_len: int = 50
    has_behavior: bool = False  # more than one behaviour type occurs
    has_category: bool = False
    has_time: bool = False  # real clock time (gaps mean something)
    item_counts: Tensor | None = None  # (n_items + 1,) training support, for logQ / pop


@dataclass
class TrainSequences:
    """Training-window sequences in CSR form, for non-neural baselines.

    Sequence i is items[offsets[i]:offsets[i + 1]] (ts and behaviors alike), in time order.
    """

    items: Tensor
    behaviors: Tensor
    ts: Tensor
    offsets: Tensor
