"""In-memory sequences with planted sequential structure, for fast model tests.

Each sequence follows a fixed random successor map (item -> next item) with
probability `p_follow`, otherwise jumps to a Zipf-popular item. A model that learns
transitions beats popularity by a wide margin; one that learns nothing does not.
"""

from __future__ import annotations

import torch

from bench.contract import DataSpec, TrainSequences, gap_bucket
from bench.datasets.synth_tensors import planted_sequences

__all__ = ["planted_sequences", "to_batch", "planted_task", "hit_rate"]


def to_batch(items: torch.Tensor, ts: torch.Tensor, max_len: int = 10) -> dict[str, torch.Tensor]:
    """Every prefix of every sequence as an example (last `max_len` events of history)."""
    n_seq, length = items.shape
    rows = []
    for t in range(1, length):
        lo = max(0, t - max_len)
        hist = items[:, lo:t]
        hist_ts = ts[:, lo:t]
        prev_ts = torch.cat([ts[:, lo - 1 : lo] if lo > 0 else hist_ts[:, :1], hist_ts[:, :-1]], 1)
        first = torch.zeros_like(hist, dtype=torch.bool)
        if lo == 0:
            first[:, 0] = True
        pad = max_len - hist.size(1)
        rows.append(
            {
                "items": torch.nn.functional.pad(hist, (0, pad)),
                "behaviors": torch.nn.functional.pad(torch.ones_like(hist), (0, pad)),
                "categories": torch.nn.functional.pad((hist - 1) % 5 + 1, (0, pad)),
                "gaps": torch.nn.functional.pad(gap_bucket(hist_ts - prev_ts, first), (0, pad)),
                "lengths": torch.full((n_seq,), hist.size(1)),
                "targets": items[:, t],
            }
        )
    return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}


def planted_task(seed: int = 0, n_items: int = 60, max_len: int = 10):
    """(spec, train batch dict, test batch dict, TrainSequences of the training part)."""
    items, ts = planted_sequences(n_items=n_items, seed=seed)
    train_items, train_ts = items[:500], ts[:500]
    counts = torch.bincount(train_items.flatten(), minlength=n_items + 1)
    spec = DataSpec(
        n_items=n_items,
        n_categories=5,
        max_len=max_len,
        has_behavior=False,
        has_category=True,
        has_time=True,
        item_counts=counts,
    )
    train = to_batch(train_items, train_ts, max_len)
    test = to_batch(items[500:], ts[500:], max_len)
    seqs = TrainSequences(
        items=train_items.flatten(),
        behaviors=torch.ones(train_items.numel(), dtype=torch.long),
        ts=train_ts.flatten(),
        offsets=torch.arange(0, train_items.numel() + 1, train_items.size(1)),
    )
    return spec, train, test, seqs


def hit_rate(scores: torch.Tensor, targets: torch.Tensor, k: int = 10) -> float:
    """HR@k with ties counted against the target (scores column 0 is padding)."""
    scores = scores.clone()
    scores[:, 0] = -torch.inf
    target_scores = scores.gather(1, targets.view(-1, 1))
    rank = (scores >= target_scores).sum(1)  # includes the target itself
    return (rank <= k).double().mean().item()
