"""SR: sequential rules, item a -> item b when b followed a within a few steps in training.

Ludewig and Jannach, "Evaluation of session-based recommendation algorithms", User
Modeling and User-Adapted Interaction 28 (2018), as in session-rec's `sr.py`. In `fit`,
for every training sequence and every pair of positions i < j with j - i <= `steps`,
the rule items[i] -> items[j] gains w(j - i):

    div 1/d    linear max(0, 1 - 0.1 d)    same 1    quadratic 1/d^2    log 1/log10(d + 1.7)

(session-rec's `linear` goes negative past 10 steps; here it stops at 0, and a rule
whose weight sums to 0 is no rule). With `pruning` > 0 each item keeps only its
`pruning` heaviest rules, equal weights going to the lower item index (session-rec
keeps the first seen). The rules are a sparse item x item matrix in CSR form, built with
a few vector ops per step distance, never a dense n_items x n_items matrix.

Scoring a history: session-rec reads the rules of its last item only (`history_items`
= 1); with `history_items` = m, the item k events back (k = 1..m) adds its rules times
w(k), the weight a rule of that distance gets. Items with a rule rank above those
without, every tie and every item without a rule falling back to training-window
popularity, so the ranking over all items is complete (`repeat.rank_above_popularity`).
Items of the history are scored like any other; the run's `exclude_history` drops them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from bench.models.base import Baseline, DataSpec, TrainSequences
from bench.models.knn import budget_splits, expand_ranges, rank_in_group, take
from bench.models.registry import register_model
from bench.models.repeat import popularity_fraction, rank_above_popularity, snap_ties

Weighting = Literal["div", "linear", "same", "quadratic", "log"]


def step_weight(weighting: str, distance: int) -> float:
    """w(d) of the docstring: how much a rule spanning `distance` steps counts."""
    if weighting == "div":
        return 1.0 / distance
    if weighting == "linear":
        return max(0.0, 1.0 - 0.1 * distance)
    if weighting == "same":
        return 1.0
    if weighting == "quadratic":
        return 1.0 / distance**2
    return 1.0 / math.log10(distance + 1.7)


@dataclass
class Rules:
    """Sparse rule matrix in CSR form: the rules of item a are entries offsets[a]:offsets[a+1]."""

    offsets: Tensor  # (n_items + 2,)
    targets: Tensor  # (R,) item b of each rule
    weights: Tensor  # (R,) float64 summed weight

    def to(self, device: torch.device) -> Rules:
        return Rules(self.offsets.to(device), self.targets.to(device), self.weights.to(device))


def build_rules(train: TrainSequences, n_items: int, steps: int, weighting: str) -> Rules:
    """Sum w(j - i) over every in-sequence pair at distance <= `steps` (item pairs as keys)."""
    items = train.items.long().cpu()
    offsets = train.offsets.long().cpu()
    width = n_items + 1
    sequence = torch.repeat_interleave(
        torch.arange(offsets.numel() - 1), offsets.diff(), output_size=items.numel()
    )
    known = (items >= 1) & (items <= n_items)
    keys = torch.empty(0, dtype=torch.long)
    weights = torch.empty(0, dtype=torch.float64)
    for distance in range(1, min(steps, max(items.numel() - 1, 0)) + 1):
        weight = step_weight(weighting, distance)
        if weight <= 0:
            continue
        src, dst = slice(0, -distance), slice(distance, None)
        pair = (sequence[src] == sequence[dst]) & known[src] & known[dst]
        step_keys = items[src][pair] * width + items[dst][pair]
        keys = torch.cat([keys, step_keys])
        weights = torch.cat(
            [weights, torch.full((step_keys.numel(),), weight, dtype=torch.float64)]
        )
        keys, inverse = torch.unique(keys, return_inverse=True)  # merge: memory ~ distinct pairs
        weights = torch.zeros(keys.numel(), dtype=torch.float64).scatter_add_(0, inverse, weights)
    source = keys // width
    counts = torch.bincount(source, minlength=width)
    csr = torch.zeros(width + 1, dtype=torch.long)
    torch.cumsum(counts, 0, out=csr[1:])
    return Rules(csr, keys % width, weights)


def prune(rules: Rules, keep: int) -> Rules:
    """Each item's `keep` heaviest rules; equal weights keep the lower target index."""
    n_rows = rules.offsets.numel() - 1
    source = torch.repeat_interleave(torch.arange(n_rows), rules.offsets.diff())
    # entries are sorted by (source, target): stable sorts give (source, -weight, target)
    by_weight = torch.sort(-snap_ties(rules.weights), stable=True).indices
    order = by_weight[torch.sort(source[by_weight], stable=True).indices]
    place, _ = rank_in_group(source[order], n_rows)
    kept = order[place < keep]
    kept = kept.sort().values  # back to (source, target) order
    counts = torch.bincount(source[kept], minlength=n_rows)
    csr = torch.zeros(n_rows + 1, dtype=torch.long)
    torch.cumsum(counts, 0, out=csr[1:])
    return Rules(csr, rules.targets[kept], rules.weights[kept])


@register_model
class SR(Baseline):
    name = "sr"
    family = "baseline"
    paper = (
        "Ludewig, Jannach. Evaluation of session-based recommendation algorithms. "
        "User Modeling and User-Adapted Interaction 28, 2018"
    )
    max_pairs: ClassVar[int] = 1 << 22  # expanded (history, rule) entries per chunk

    @dataclass
    class Config:
        steps: Annotated[int, Field(ge=1)] = 10  # longest distance a rule spans
        weighting: Weighting = "div"
        pruning: Annotated[int, Field(ge=0)] = 20  # rules kept per item; 0 keeps all
        history_items: Annotated[int, Field(ge=1)] = 1  # last events whose rules are read

    def __init__(self, config: SR.Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.rules: Rules | None = None
        self.popularity: Tensor | None = None
        self._on_device: dict[torch.device, tuple[Rules, Tensor]] = {}

    def fit(self, train: TrainSequences) -> SR:
        cfg, n_items = self.config, self.spec.n_items
        rules = build_rules(train, n_items, cfg.steps, cfg.weighting)
        self.rules = prune(rules, cfg.pruning) if cfg.pruning > 0 else rules
        self.popularity = popularity_fraction(train, n_items)
        self._on_device = {torch.device("cpu"): (self.rules, self.popularity)}
        return self

    def fit_summary(self) -> dict:
        return {"rules": int(self.rules.targets.numel())} if self.rules is not None else {}

    def rule_scores(self, batch: dict[str, Tensor], rules: Rules) -> tuple[Tensor, Tensor, Tensor]:
        """Distinct (row, item) pairs with a rule from the history's last events, float64 sums."""
        items = batch["items"]
        rows, width = items.shape
        n_items, device = self.spec.n_items, items.device
        lengths = batch["lengths"].long().clamp(0, width)
        back = torch.arange(1, self.config.history_items + 1, device=device)  # k
        col = lengths[:, None] - back[None, :]
        inside = col >= 0
        source = items.gather(1, col.clamp(min=0))
        inside &= (source >= 1) & (source <= n_items)
        row = torch.arange(rows, device=device)[:, None].expand_as(col)[inside]
        source = source[inside]
        distance_weight = [step_weight(self.config.weighting, int(k)) for k in back]
        factor = torch.tensor(distance_weight, dtype=torch.float64, device=device)
        factor = factor.expand_as(col)[inside]
        starts = take(rules.offsets, source)
        counts = take(rules.offsets, source + 1) - starts
        per_row = torch.zeros(rows, dtype=torch.long, device=device)
        per_row.scatter_add_(0, row, counts)
        # `row` is sorted, so the sources of rows lo..hi-1 are one slice of it
        source_end = torch.cumsum(torch.bincount(row, minlength=rows), 0)
        parts = []
        for lo, hi in budget_splits(per_row, self.max_pairs):
            a, b = int(source_end[lo - 1]) if lo else 0, int(source_end[hi - 1])
            owner, index = expand_ranges(starts[a:b], counts[a:b])
            keys = take(row[a:b], owner) * (n_items + 1) + take(rules.targets, index)
            value = take(rules.weights, index) * take(factor[a:b], owner)
            keys, inverse = torch.unique(keys, return_inverse=True)
            sums = torch.zeros(keys.numel(), dtype=torch.float64, device=device)
            parts.append((keys, sums.scatter_add_(0, inverse, value)))
        if not parts:
            empty = torch.empty(0, dtype=torch.long, device=device)
            return empty, empty, torch.empty(0, dtype=torch.float64, device=device)
        keys = torch.cat([k for k, _ in parts])
        value = torch.cat([v for _, v in parts])
        positive = value > 0
        keys, value = keys[positive], value[positive]
        return keys // (n_items + 1), keys % (n_items + 1), value

    def scores(self, batch: dict[str, Tensor]) -> Tensor:
        if self.rules is None:
            raise RuntimeError("sr: call fit() before scores()")
        device = batch["items"].device
        if device not in self._on_device:
            self._on_device[device] = (self.rules.to(device), self.popularity.to(device))
        rules, popularity = self._on_device[device]
        row, item, value = self.rule_scores(batch, rules)
        return rank_above_popularity(row, item, value, popularity, batch["items"].size(0))

    @staticmethod
    def search_space(trial) -> dict:
        return {
            "steps": trial.suggest_categorical("steps", [1, 2, 3, 5, 10, 15, 20, 30]),
            "weighting": trial.suggest_categorical(
                "weighting", ["div", "linear", "same", "quadratic", "log"]
            ),
            "pruning": trial.suggest_categorical("pruning", [0, 10, 20, 50]),
            "history_items": trial.suggest_categorical("history_items", [1, 2, 3, 5]),
        }
