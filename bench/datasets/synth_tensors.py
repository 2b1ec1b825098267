"""In-memory synthetic data: model batches shaped like Taobao `user-time` examples at any
catalogue size, and sequences with planted sequential structure.

Why in bench: tests and benchmarks draw the same data; living here, neither imports the
other. Only torch: no data files, no models.
"""

from __future__ import annotations

import torch

TAOBAO_ITEMS = 4_162_024
TAOBAO_EVENTS = 100_150_807


def zipf_counts(n_items: int, exponent: float = 0.9, total: int = TAOBAO_EVENTS, seed: int = 0):
    """(n_items + 1,) float64 event counts, Zipf over a random ranking; index 0 = padding = 0.

    Every item keeps at least one event (the protocol drops rarer ones before training).
    """
    gen = torch.Generator().manual_seed(seed)
    weights = torch.arange(1, n_items + 1, dtype=torch.float64) ** -exponent
    weights = weights[torch.randperm(n_items, generator=gen)]
    counts = torch.zeros(n_items + 1, dtype=torch.float64)
    counts[1:] = (weights / weights.sum() * total).round().clamp(min=1)
    return counts


def synthetic_batch(
    n_rows: int,
    counts: torch.Tensor,
    max_len: int = 50,
    p_full: float = 0.6,
    p_revisit: float = 0.3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """A batch in the model contract, shaped like Taobao `user-time` examples.

    Lengths: `max_len` with probability `p_full` (most Taobao users have more than 50
    earlier events), else uniform in 1..max_len-1. Items: drawn by popularity (`counts`);
    with probability `p_revisit` an event returns to an earlier item of the same history.
    Targets follow the same popularity. Loops run over positions, never over rows; the
    batch is drawn on `device` (by its own generator, so CPU and GPU draws differ).
    """
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    cdf = torch.cumsum(counts.to(device, torch.float64) / counts.sum(), 0)
    cdf[-1] = 1.0
    n_items = counts.numel() - 1
    opts = {"generator": gen, "device": device}

    def draw(shape):
        u = torch.rand(shape, dtype=torch.float64, **opts)
        return torch.searchsorted(cdf, u).clamp(1, n_items)

    lengths = torch.where(
        torch.rand(n_rows, **opts) < p_full,
        torch.full((n_rows,), max_len, device=device),
        torch.randint(1, max(max_len, 2), (n_rows,), **opts),
    ).clamp(max=max_len)
    items = draw((n_rows, max_len))
    rows = torch.arange(n_rows, device=device)
    for t in range(1, max_len):
        back = (torch.rand(n_rows, **opts) * t).long()
        revisit = torch.rand(n_rows, **opts) < p_revisit
        items[:, t] = torch.where(revisit, items[rows, back], items[:, t])
    real = torch.arange(max_len, device=device) < lengths[:, None]
    items = items * real
    return {
        "items": items,
        "behaviors": torch.randint(1, 5, (n_rows, max_len), **opts) * real,
        "categories": torch.zeros_like(items),
        "gaps": torch.randint(1, 33, (n_rows, max_len), **opts) * real,
        "lengths": lengths,
        "targets": draw((n_rows,)),
    }


def planted_sequences(
    n_seq: int = 600, n_items: int = 60, length: int = 12, p_follow: float = 0.8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(items (n_seq, length) in 1..n_items, ts (n_seq, length) seconds)."""
    gen = torch.Generator().manual_seed(seed)
    successor = torch.randperm(n_items, generator=gen) + 1  # successor[i - 1] follows item i
    popularity = 1.0 / torch.arange(1, n_items + 1).double()
    items = torch.empty(n_seq, length, dtype=torch.long)
    items[:, 0] = torch.multinomial(popularity, n_seq, replacement=True, generator=gen) + 1
    for t in range(1, length):
        jump = torch.multinomial(popularity, n_seq, replacement=True, generator=gen) + 1
        follow = torch.rand(n_seq, generator=gen) < p_follow
        items[:, t] = torch.where(follow, successor[items[:, t - 1] - 1], jump)
    gaps = torch.randint(1, 3600, (n_seq, length), generator=gen)
    return items, gaps.cumsum(1)
