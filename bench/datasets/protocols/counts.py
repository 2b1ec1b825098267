"""Per-split statistics of a built artifact (examples, sequences, events, distinct items,
categories and target items), from presence tables rather than group-bys."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import polars as pl

from bench.datasets.protocols.arrays import CHUNK_ROWS, chunked_bincount, n_distinct
from bench.datasets.protocols.splits import NO_TARGET, SPLITS


def split_counts(
    events: pl.DataFrame,
    examples: dict[str, pl.DataFrame],
    n_categories: int,
    targets: np.ndarray | None = None,
) -> dict[str, Any]:
    """Per split: examples, sequences, events, items, categories, target items; and totals.

    Row counts are comparisons; distinct counts are presence tables (value x split, and
    value x split of the row's example), each one chunked pass over a column, run in two
    threads (NumPy releases the GIL). `targets`: the per-row codes of
    `examples_and_targets` when the recipe has them (else they are made from `examples`).
    """
    from bench.datasets.schema import BEHAVIORS

    n = events.height
    split = events["split"].to_numpy()
    item, seq = events["item"].to_numpy(), events["seq"].to_numpy()
    if targets is None:
        targets = target_codes(n, examples)
    with ThreadPoolExecutor(2, thread_name_prefix="counts") as pool:
        jobs = {
            "items": pool.submit(presence_by_code, item, split, len(SPLITS)),
            "categories": pool.submit(
                presence_by_code, events["category"].to_numpy(), split, len(SPLITS)
            ),
        }
        if targets is not None:
            jobs["target_items"] = pool.submit(presence_by_code, item, targets, NO_TARGET + 1)
            jobs["sequences"] = pool.submit(presence_by_code, seq, targets, NO_TARGET + 1)
        seen = {key: job.result() for key, job in jobs.items()}
    seen["categories"][0] = False  # category 0 is unknown: never counted
    per_split = chunked_bincount(split, len(SPLITS), None)
    counts: dict[str, Any] = {}
    for code, name in enumerate(SPLITS):
        pos = examples[name]["pos"]
        counts[name] = {
            "examples": len(pos),
            "sequences": distinct_in(seen, "sequences", code, seq, pos),
            "events": int(per_split[code]),
            "items": int(np.count_nonzero(seen["items"][:, code])),
            "categories": int(np.count_nonzero(seen["categories"][:, code])),
            "target_items": distinct_in(seen, "target_items", code, item, pos),
        }
    counts["total"] = {
        "events": n,
        "sequences": int(seq.max()) + 1 if n else 0,
        "items": int(np.count_nonzero(seen["items"].any(axis=1))),
        "categories": n_categories,
    }
    behaviors = chunked_bincount(events["behavior"].to_numpy(), len(BEHAVIORS) + 1, None)
    counts["behaviors"] = {b: int(behaviors[i + 1]) for i, b in enumerate(BEHAVIORS)}
    return counts


def target_codes(n: int, examples: dict[str, pl.DataFrame]) -> np.ndarray | None:
    """Per event row, the split whose example targets it (NO_TARGET: none); None when some
    row is the target of two examples (then the counts gather instead)."""
    codes = np.full(n, NO_TARGET, dtype=np.uint8)
    for code, name in enumerate(SPLITS):
        codes[examples[name]["pos"].to_numpy()] = code
    found = chunked_bincount(codes, NO_TARGET, None)
    return codes if all(found[c] == examples[s].height for c, s in enumerate(SPLITS)) else None


def distinct_in(
    seen: dict[str, np.ndarray], key: str, code: int, values: np.ndarray, pos: pl.Series
) -> int:
    """Distinct `values` among a split's targets: from the presence table when there is
    one, else by gathering the target rows."""
    if key in seen:
        return int(np.count_nonzero(seen[key][:, code]))
    rows = pos.to_numpy()
    return n_distinct(values[rows]) if len(rows) else 0


def presence_by_code(values: np.ndarray, codes: np.ndarray, n_codes: int) -> np.ndarray:
    """(max value + 1, n_codes) booleans: does the value occur in a row of that code? One
    chunked pass that sets value * n_codes + code in a flat table (setting True twice is
    harmless, so repeated indices need no ufunc.at)."""
    size = int(values.max()) + 1 if len(values) else 1
    seen = np.zeros((size, n_codes), dtype=bool)
    flat = seen.reshape(-1)
    for lo in range(0, len(values), CHUNK_ROWS):
        key = values[lo : lo + CHUNK_ROWS].astype(np.int64)
        key *= n_codes
        key += codes[lo : lo + CHUNK_ROWS]
        flat[key] = True
    return seen
