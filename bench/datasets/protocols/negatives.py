"""Sampled negatives, frozen into the artifact for valid and test when sampled metrics are
asked for (full ranking needs none)."""

from __future__ import annotations

import numpy as np
import polars as pl

from bench.datasets.protocols.base import Built, Params
from bench.datasets.protocols.splits import TEST, VALID
from bench.errors import ConfigError


def sample_negatives(
    targets: np.ndarray, n_items: int, k: int, seed: int, split_code: int
) -> np.ndarray:
    """(len(targets), k) distinct items in 1..n_items, none equal to the row's target.

    Uniform; small catalogues draw by random keys, large ones by rejection of the few
    collisions, both vectorised.
    """
    if k > n_items - 1:
        raise ConfigError(
            f"{k} sampled negatives asked, but only {n_items - 1} items can be negatives",
            option="--param sampled_negatives",
            hint=f"use at most {n_items - 1}",
        )
    rng = np.random.default_rng([seed, split_code])
    rows = len(targets)
    out = np.empty((rows, k), dtype=np.uint32)
    chunk = max(1, 20_000_000 // max(n_items, 1))
    if k * 4 >= n_items or chunk >= 64:
        for lo in range(0, rows, chunk):  # per block of rows, not per row
            hi = min(rows, lo + chunk)
            keys = rng.random((hi - lo, n_items))
            keys[np.arange(hi - lo), targets[lo:hi] - 1] = 2.0  # never among the k smallest
            out[lo:hi] = np.argpartition(keys, k - 1, axis=1)[:, :k] + 1
        return out
    draw = rng.integers(1, n_items + 1, size=(rows, k), dtype=np.int64)
    while True:
        srt = np.sort(draw, axis=1)
        bad = (srt[:, 1:] == srt[:, :-1]).any(axis=1) | (draw == targets[:, None]).any(axis=1)
        if not bad.any():
            break
        draw[bad] = rng.integers(1, n_items + 1, size=(int(bad.sum()), k), dtype=np.int64)
    out[:] = draw
    return out


def negatives_for(built: Built, params: Params) -> dict[str, pl.DataFrame]:
    """negatives_<split> frames for valid and test when sampled metrics are requested."""
    k = params.sampled_negatives
    if not k:
        return {}
    n_items = built.items.height
    out = {}
    for code, split in ((VALID, "valid"), (TEST, "test")):
        ex = built.examples[split]
        targets = built.events["item"].gather(ex["pos"]).to_numpy().astype(np.int64)
        neg = sample_negatives(targets, n_items, k, params.negatives_seed, code)
        series = pl.Series("negatives", neg).cast(pl.List(pl.UInt32)) if len(neg) else None
        if series is None:
            series = pl.Series("negatives", [], dtype=pl.List(pl.UInt32))
        out[split] = pl.DataFrame([series])
    return out
