"""NumPy kernels that count 100M-row columns in chunks, without sorting or widening
(bincounts, first occurrences, distinct counts, support)."""

from __future__ import annotations

import numpy as np
import polars as pl

# Rows per NumPy chunk: bounds the temporary copies, and keeps them under glibc's mmap
# threshold so that the allocator reuses their pages instead of faulting in fresh ones.
CHUNK_ROWS = 1 << 20
SMALL_RANGE = 8  # value ranges counted by comparisons rather than bincount


def chunked_bincount(values: np.ndarray, size: int, mask: np.ndarray | None) -> np.ndarray:
    """np.bincount(values[mask], minlength=size), in chunks (bincount widens to int64).

    A few distinct codes are counted by comparisons (no widening at all); a large `size`
    gets chunks of several times its rows, as each chunk's bincount zeroes `size` counts.
    """
    if mask is None and size <= SMALL_RANGE and values.dtype.kind in "ui":
        out = np.zeros(size, dtype=np.int64)
        for lo in range(0, len(values), CHUNK_ROWS):  # small chunks: the masks reuse memory
            part = values[lo : lo + CHUNK_ROWS]
            out += [np.count_nonzero(part == v) for v in range(size)]
        return out
    out = np.zeros(size, dtype=np.int64)
    step = max(CHUNK_ROWS, 4 * size)
    for lo in range(0, len(values), step):
        part = values[lo : lo + step]
        if mask is not None:
            part = part[mask[lo : lo + step]]
        out += np.bincount(part, minlength=size)[:size]
    return out


def first_rows(values: np.ndarray, size: int, mask: np.ndarray | None) -> np.ndarray:
    """For each value in 0..size-1, the first row holding it (among `mask` rows), else -1.

    A chunked scatter-min of row numbers (ufunc.at, which is exact for repeated indices),
    in UInt32 while the rows fit: no sort, no hash, a few bytes of temporary per row.
    """
    n = len(values)
    dtype = np.uint32 if n < 2**32 - 1 else np.uint64
    first = np.full(size, n, dtype=dtype)
    for lo in range(0, n, CHUNK_ROWS):
        rows = np.arange(lo, min(n, lo + CHUNK_ROWS), dtype=dtype)
        part = values[lo : lo + CHUNK_ROWS]
        if mask is not None:
            keep = mask[lo : lo + CHUNK_ROWS]
            rows, part = rows[keep], part[keep]
        np.minimum.at(first, part, rows)
    out = first.astype(np.int64)
    out[first == n] = -1
    return out


def n_distinct(values: np.ndarray) -> int:
    """Distinct count: a presence table for small non-negative ints, else a hash."""
    if len(values) == 0:
        return 0
    if values.dtype.kind in "ui" and values.min() >= 0 and values.max() < 4 * len(values) + 2**24:
        seen = np.zeros(int(values.max()) + 1, dtype=bool)
        seen[values] = True
        return int(np.count_nonzero(seen))
    return pl.Series(values).n_unique()


def support(items: pl.Series, mask: np.ndarray | None = None) -> pl.DataFrame:
    """(item, len): how often each raw item occurs (in `mask` rows); a chunked bincount for
    small non-negative ints, else a hash group-by."""
    if items.dtype.is_integer() and items.len():
        arr = items.to_numpy()
        if arr.min() >= 0 and arr.max() < 4 * len(arr) + 2**24:
            counts = chunked_bincount(arr, int(arr.max()) + 1, mask)
            ids = np.flatnonzero(counts)
            return pl.DataFrame(
                {"item": pl.Series(ids).cast(items.dtype), "len": counts[ids].astype(np.uint32)}
            )
    if mask is not None:
        items = items.filter(pl.Series(mask))
    return items.alias("item").to_frame().group_by("item").len()
