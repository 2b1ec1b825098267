"""Repeat: the history's own items first, by recency and frequency, then the rest by popularity.

The floor of every e-commerce table: most next events revisit an item the user already
touched (Anderson, Kumar, Tomkins, Vassilvitskii, "The dynamics of repeat consumption",
WWW 2014; Ren et al., "RepeatNet: A Repeat Aware Neural Recommendation Machine for
Session-based Recommendation", AAAI 2019), and ranking those items by how recently and
how often they occurred needs no training.

Score of a history item i, over its occurrences o at positions p_o (1 = the most recent
event) with behaviour b_o:

    h(i) = sum_o  w(b_o) * (recency_decay ** (p_o - 1) + frequency_weight)

a recency-decayed count plus `frequency_weight` times a plain (behaviour-weighted)
count; w(b) is the `pv_weight` .. `buy_weight` of the event's behaviour (1 when the
batch carries none). With frequency_weight = 0 and recency_decay <= 0.5 the order is
that of the last occurrence alone; recency_decay = 1 orders by count.

Every history item ranks above every other item, and every item gets its own place, so
full-ranking metrics are defined: see `rank_above_popularity`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from bench.models.base import Baseline, DataSpec, TrainSequences
from bench.models.registry import register_model

# Values closer than this relative gap count as equal, so that sums taken in a different
# order (float rounding) never turn a tie into a win or a loss.
_RELATIVE_BITS = 40


def snap_ties(values: Tensor) -> Tensor:
    """Round float64 values to `_RELATIVE_BITS` bits of mantissa."""
    mantissa, exponent = torch.frexp(values)
    return torch.ldexp(torch.round(mantissa * 2.0**_RELATIVE_BITS) / 2.0**_RELATIVE_BITS, exponent)


def popularity_fraction(train: TrainSequences, n_items: int) -> Tensor:
    """float64 (n_items + 1,): training-window event counts scaled into [0, 1)."""
    items = train.items.long().cpu()
    items = items[(items >= 1) & (items <= n_items)]
    counts = torch.bincount(items, minlength=n_items + 1).double()
    counts[0] = 0.0
    return counts / (counts.max() + 1.0)


def rank_above_popularity(
    row: Tensor, item: Tensor, value: Tensor, popularity: Tensor, batch: int
) -> Tensor:
    """(batch, n_items + 1) float32 scores: the (row, item) entries first, by `value`, then
    every other item by `popularity` (in [0, 1)); equal values fall back to popularity.

    An entry scores 1 + (its place among the distinct values of its row, 0 = smallest)
    + its popularity, any other item its popularity alone. Storing the place (a small
    integer) rather than the value keeps the order by value exact in float32 whatever the
    spread of the values; popularity breaks ties to float32 precision.
    `row`, `item` are distinct pairs; `value` is float64.
    """
    device = popularity.device
    out = popularity.float().unsqueeze(0).repeat(batch, 1)
    if row.numel() == 0:
        return out
    value = snap_ties(value)
    by_value = torch.sort(value, stable=True).indices
    order = by_value[torch.sort(row[by_value], stable=True).indices]
    row_sorted, value_sorted = row[order], value[order]
    new_row = torch.ones_like(row_sorted, dtype=torch.bool)
    new_row[1:] = row_sorted[1:] != row_sorted[:-1]
    new_value = new_row.clone()
    new_value[1:] |= value_sorted[1:] != value_sorted[:-1]
    distinct_so_far = torch.cumsum(new_value.long(), 0)
    row_start = torch.zeros(batch, dtype=torch.long, device=device)
    row_start[row_sorted[new_row]] = distinct_so_far[new_row]
    place = distinct_so_far - row_start[row_sorted]
    item_sorted = item[order]
    out[row_sorted, item_sorted] = (1.0 + place.double() + popularity[item_sorted]).float()
    return out


@register_model
class Repeat(Baseline):
    name = "repeat"
    family = "baseline"
    paper = (
        "Anderson, Kumar, Tomkins, Vassilvitskii. The dynamics of repeat consumption. "
        "WWW 2014; Ren et al. RepeatNet. AAAI 2019"
    )

    @dataclass
    class Config:
        recency_decay: Annotated[float, Field(gt=0, le=1)] = 0.8  # per step back in time
        frequency_weight: Annotated[float, Field(ge=0)] = 0.0  # weight of the plain count
        pv_weight: Annotated[float, Field(ge=0)] = 1.0
        fav_weight: Annotated[float, Field(ge=0)] = 1.0
        cart_weight: Annotated[float, Field(ge=0)] = 1.0
        buy_weight: Annotated[float, Field(ge=0)] = 1.0

    def __init__(self, config: Repeat.Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.popularity: Tensor | None = None

    def fit(self, train: TrainSequences) -> Repeat:
        self.popularity = popularity_fraction(train, self.spec.n_items)
        return self

    def behaviour_weights(self, device: torch.device) -> Tensor:
        """Weight per behaviour code: 0 (unknown) counts as 1, then pv, fav, cart, buy."""
        cfg = self.config
        weights = [1.0, cfg.pv_weight, cfg.fav_weight, cfg.cart_weight, cfg.buy_weight]
        return torch.tensor(weights, dtype=torch.float64, device=device)

    def history_scores(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Distinct (row, item) pairs of the histories and their h(i), float64."""
        items = batch["items"]
        rows, width = items.shape
        n_items = self.spec.n_items
        lengths = batch["lengths"].long().clamp(0, width)
        col = torch.arange(width, device=items.device)[None, :]
        valid = (col < lengths[:, None]) & (items >= 1) & (items <= n_items)
        steps_back = (lengths[:, None] - 1 - col)[valid].double()  # p - 1
        weight = torch.pow(torch.tensor(self.config.recency_decay, dtype=torch.float64), steps_back)
        weight = weight.to(items.device) + self.config.frequency_weight
        behaviors = batch.get("behaviors")
        if behaviors is not None:
            codes = behaviors[valid].long().clamp(0, 4)
            weight = weight * self.behaviour_weights(items.device)[codes]
        row = torch.arange(rows, device=items.device)[:, None].expand(rows, width)[valid]
        keys, inverse = torch.unique(row * (n_items + 1) + items[valid].long(), return_inverse=True)
        value = torch.zeros(keys.numel(), dtype=torch.float64, device=items.device)
        value.scatter_add_(0, inverse, weight)
        return keys // (n_items + 1), keys % (n_items + 1), value

    def scores(self, batch: dict[str, Tensor]) -> Tensor:
        if self.popularity is None:
            raise RuntimeError("repeat: call fit() before scores()")
        device = batch["items"].device
        if self.popularity.device != device:
            self.popularity = self.popularity.to(device)
        row, item, value = self.history_scores(batch)
        return rank_above_popularity(row, item, value, self.popularity, batch["items"].size(0))

    @staticmethod
    def search_space(trial) -> dict:
        return {
            "recency_decay": trial.suggest_float("recency_decay", 0.05, 1.0),
            "frequency_weight": trial.suggest_float("frequency_weight", 0.0, 1.0),
            "fav_weight": trial.suggest_float("fav_weight", 0.25, 4.0, log=True),
            "cart_weight": trial.suggest_float("cart_weight", 0.25, 4.0, log=True),
            "buy_weight": trial.suggest_float("buy_weight", 0.25, 4.0, log=True),
        }
