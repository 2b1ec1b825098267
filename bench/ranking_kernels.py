"""Full-ranking kernels that give exactly `bench.evaluation.chunked_ranks`' ranks by other
routes: `fused_ranks` (chunked_ranks' own product, then one compiled compare-and-count) and
`plain_ranks` (the reference loop: one product against the whole table).

Why in bench: the scale tests check them against chunked_ranks and the GPU and scale
benchmarks time them; both import them from here, so neither imports the other.
"""

from __future__ import annotations

import math

import torch

from bench.evaluation import DEFAULT_CHUNK_ITEMS, chunk_scores


def _count_chunk(
    scores: torch.Tensor, target_score: torch.Tensor, targets: torch.Tensor, lo: torch.Tensor
) -> torch.Tensor:
    """Per row: items lo.. of `scores` (B, W) that beat the row's target, by bench's rule.

    Exactly chunked_ranks' `_beats`, padding and target clearing and count, in one
    expression so that torch.compile makes one pass over the scores of it. `lo` is a
    0-dim tensor so that one compiled kernel serves every chunk.
    """
    target_score = target_score.nan_to_num(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    items = lo + torch.arange(scores.size(1), device=scores.device)
    beats = (scores >= target_score[:, None]) | (target_score[:, None] == -math.inf)
    keep = (items[None, :] != targets[:, None]) & (items[None, :] != 0)
    return (beats & keep).sum(1, dtype=torch.int32)


_COMPILED: dict[str, object] = {}


def _counter(compiled: bool):
    if not compiled:
        return _count_chunk
    if "count" not in _COMPILED:
        _COMPILED["count"] = torch.compile(_count_chunk, dynamic=True)
    return _COMPILED["count"]


@torch.no_grad()
def fused_ranks(
    hidden: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_items: int = DEFAULT_CHUNK_ITEMS,
    chunk_rows: int = 2048,
    compiled: bool = True,
) -> torch.Tensor:
    """Ranks equal to `chunked_ranks(hidden[r], table, targets[r], chunk_items=chunk_items)`
    for every `chunk_rows` slice r, with the compare-and-count fused into one kernel.

    Scores are computed by the very product chunked_ranks uses (same operands, same
    shapes: the chunk's item rows with the slice's target rows appended), so every score
    is bit-identical and so is every rank, ties included. No history exclusion here.
    """
    n_items = table.size(0) - 1
    targets = targets.to(hidden.device).long()
    if targets.numel() and (int(targets.min()) < 1 or int(targets.max()) > n_items):
        raise ValueError(f"targets must be item indices in 1..{n_items}")
    table = table.to(hidden.dtype)
    count = _counter(compiled)
    single = n_items + 1 <= chunk_items
    starts = list(range(0, n_items + 1, chunk_items))
    lows = torch.tensor(starts, device=hidden.device)  # one copy, not one per chunk
    out = []
    for r0 in range(0, hidden.size(0), chunk_rows):
        h, t = hidden[r0 : r0 + chunk_rows], targets[r0 : r0 + chunk_rows]
        counts = torch.zeros(h.size(0), dtype=torch.long, device=h.device)
        target_rows = None if single else table[t]
        for k, lo in enumerate(starts):
            hi = min(lo + chunk_items, n_items + 1)
            scores, target_score = chunk_scores(h, table, t, target_rows, lo, hi)
            counts += count(scores, target_score, t, lows[k]).long()
        out.append(counts + 1)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=hidden.device)


@torch.no_grad()
def plain_ranks(hidden, table, targets, chunk_rows: int = 2048) -> torch.Tensor:
    """The issue's reference loop: a product against the whole table, then a plain count.

    The target's score is gathered from the same product; padding and the target itself
    are taken off the count, so the ranks follow bench's rule (ties count against).
    """
    table = table.to(hidden.dtype)
    out = []
    for r0 in range(0, hidden.size(0), chunk_rows):
        h, t = hidden[r0 : r0 + chunk_rows], targets[r0 : r0 + chunk_rows]
        scores = h @ table.T
        rows = torch.arange(h.size(0), device=h.device)
        ts = scores[rows, t].nan_to_num(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
        beats = scores >= ts[:, None]
        beats[ts == -math.inf] = True
        count = beats.sum(1) - beats[:, 0].long() - beats[rows, t].long()
        out.append(count + 1)
        del scores, beats
    return torch.cat(out)
