"""Full-ranking kernels: ranks of 2,048 histories over 200,000 items, d=64, fp32, one thread.

`chunked_ranks` is what evaluation runs; `fused_ranks` (eager: no compile time in the
figure) and `plain_ranks` give the same ranks by other routes (tests/test_scale.py).
"""

from __future__ import annotations

import pytest
import torch

from bench.evaluation import chunked_ranks
from bench.ranking_kernels import fused_ranks, plain_ranks

HISTORIES, ITEMS, DIM = 2_048, 200_000, 64


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(HISTORIES, DIM, generator=gen)
    table = torch.randn(ITEMS + 1, DIM, generator=gen)
    targets = torch.randint(1, ITEMS + 1, (HISTORIES,), generator=gen)
    return hidden, table, targets


KERNELS = {
    "chunked_ranks": lambda h, w, t: chunked_ranks(h, w, t),
    "fused_ranks": lambda h, w, t: fused_ranks(h, w, t, compiled=False),
    "plain_ranks": lambda h, w, t: plain_ranks(h, w, t),
}


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_full_ranking(benchmark, inputs, kernel):
    benchmark.group = f"ranking {HISTORIES} x {ITEMS:,} items"
    ranks = benchmark(KERNELS[kernel], *inputs)
    assert ranks.shape == (HISTORIES,) and int(ranks.min()) >= 1
