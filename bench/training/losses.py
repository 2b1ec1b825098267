"""Full softmax, and sampled softmax with logQ correction for very large catalogues.

Both are called as `criterion(hidden (N, d), targets (N,))` by the models'
`training_loss`, against the model's tied item table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Above this many items the default loss switches to sampled softmax: a full
# softmax over 4.16M items costs a (B, 4.16M) logit matrix per step.
SAMPLED_SOFTMAX_THRESHOLD = 200_000


class FullSoftmax:
    """Cross-entropy over every item; the padding row 0 is never a class."""

    def __init__(self, table_fn) -> None:
        self.table_fn = table_fn

    def __call__(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = hidden @ self.table_fn().T
        logits[:, 0] = torch.finfo(logits.dtype).min
        return F.cross_entropy(logits.float(), targets)


class SampledSoftmax:
    """Softmax over the target and `n_negatives` shared negatives drawn from Q.

    Q is the training popularity raised to `alpha` (0 = uniform). Subtracting
    log Q from every logit (the logQ correction, Bengio & Senecal 2008; Yi et al.
    2019) makes the sampled loss an unbiased stand-in for the full softmax;
    negatives that hit the target are masked out.
    """

    def __init__(
        self, table_fn, item_counts: torch.Tensor, n_negatives: int = 8192, alpha: float = 0.75
    ) -> None:
        self.table_fn = table_fn
        self.n_negatives = n_negatives
        weights = item_counts.double().clamp(min=0) ** alpha
        weights[0] = 0.0
        if weights.sum() <= 0:
            weights[1:] = 1.0
        q = weights / weights.sum()
        self.log_q = torch.log(q.clamp(min=1e-30)).float()
        self.cdf = torch.cumsum(q, 0)
        self.cdf[-1] = 1.0  # guard against rounding

    def sample(self, n: int, device) -> torch.Tensor:
        u = torch.rand(n, dtype=torch.float64)
        return torch.searchsorted(self.cdf, u).clamp(min=1).to(device)

    def __call__(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        table = self.table_fn()
        negatives = self.sample(self.n_negatives, hidden.device)
        log_q = self.log_q.to(hidden.device)
        pos = (hidden * table[targets]).sum(-1) - log_q[targets]
        neg = hidden @ table[negatives].T - log_q[negatives]
        neg = neg.masked_fill(negatives.view(1, -1) == targets.view(-1, 1), float("-inf"))
        logits = torch.cat([pos.unsqueeze(1), neg], 1).float()
        return F.cross_entropy(logits, torch.zeros_like(targets))


def make_criterion(
    kind: str,
    table_fn,
    n_items: int,
    item_counts: torch.Tensor | None,
    n_negatives: int = 8192,
    alpha: float = 0.75,
):
    """`kind` is full, sampled or auto (sampled above SAMPLED_SOFTMAX_THRESHOLD items)."""
    if kind == "auto":
        kind = "sampled" if n_items > SAMPLED_SOFTMAX_THRESHOLD else "full"
    if kind == "full":
        return FullSoftmax(table_fn)
    counts = item_counts if item_counts is not None else torch.ones(n_items + 1)
    return SampledSoftmax(table_fn, counts, n_negatives=min(n_negatives, n_items), alpha=alpha)
