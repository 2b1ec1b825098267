"""Remapping raw ids to dense indices (1..n, 0 = unknown) and the item and category
tables of the artifact."""

from __future__ import annotations

import numpy as np
import polars as pl

from bench.datasets.protocols.arrays import chunked_bincount, first_rows, support


def index_codes(values: pl.Series, keys: pl.Series) -> pl.Series:
    """For each value, 1 + its position in `keys` (UInt32); 0 where it is not a key or null.

    Non-negative integer ids of modest range use a dense lookup table (a gather, the fast
    path for 100M-row files); anything else a hash join.
    """
    n = len(values)
    if keys.len() == 0:
        return pl.Series(values.name, np.zeros(n, dtype=np.uint32))
    if values.dtype.is_integer() and keys.dtype.is_integer() and values.null_count() < n:
        lo = min(values.min(), keys.min())  # type: ignore[type-var]
        hi = max(values.max(), keys.max())  # type: ignore[type-var]
        if lo >= 0 and hi < 4 * (n + len(keys)) + 1_000_000:
            table = np.zeros(int(hi) + 1, dtype=np.uint32)
            table[keys.to_numpy()] = np.arange(1, len(keys) + 1, dtype=np.uint32)
            # a Polars gather takes UInt32 indices as they are (NumPy would widen them)
            found = pl.Series(values.name, table).gather(values.cast(pl.UInt32))
            return found.fill_null(0) if found.null_count() else found
    keyed = pl.DataFrame({"k": keys.cast(values.dtype)}).with_row_index("i", offset=1)
    out = values.to_frame("k").join(keyed, on="k", how="left", maintain_order="left")
    return out["i"].cast(pl.UInt32).fill_null(0).alias(values.name)


def index_lookup(values: pl.Series, keys: pl.Series) -> pl.Series:
    """For each value, 1 + its position in `keys` (UInt32), null where it is not a key."""
    found = index_codes(values, keys)
    return found.set(found == 0, None) if (found == 0).any() else found


def raw_text(series: pl.Series) -> pl.Series:
    return series.cast(pl.String)


def category_vocab(raw: pl.Series, mask: np.ndarray | None = None) -> pl.Series:
    """Sorted distinct non-null raw categories (of `mask` rows): index = position + 1,
    0 = unknown. Small non-negative ints use a presence count, anything else a hash."""
    if raw.dtype.is_integer() and raw.null_count() == 0:
        return support(raw, mask)["item"].sort().alias(raw.name)
    if mask is not None:
        raw = raw.filter(pl.Series(mask))
    return raw.drop_nulls().unique().sort()  # hash-based: categories are few


def category_index(values: pl.Series, vocab: pl.Series) -> pl.Series:
    return index_codes(values, vocab)


def item_table(
    vocab: pl.Series,
    index: pl.Series,
    category: pl.Series,
    train: np.ndarray,
    categories: pl.Series,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """items.parquet and categories.parquet for the item vocabulary `vocab`.

    Per kept event row: `index` (1..len(vocab)), raw `category`, and `train` (a training
    row?). An item's `train_count` is its training rows; its category that of its first
    training row (its first row at all, for an item with none: user-loo's vocabulary).
    """
    size = len(vocab) + 1
    idx = index.fill_null(0).to_numpy()  # 0: not in the vocabulary; its slot is dropped
    counts = chunked_bincount(idx, size, train)[1:]
    first = first_rows(idx, size, train)
    if (first[1:] < 0).any():  # items without a training row: their first row at all
        anywhere = first_rows(idx, size, None)
        first = np.where(first < 0, anywhere, first)
    first = first[1:]
    seen = first >= 0
    raw_category = pl.Series("category", [None] * len(vocab), dtype=category.dtype)
    if seen.any():
        picked = category.gather(first[seen])
        raw_category = raw_category.scatter(np.flatnonzero(seen), picked)
    return items_frame(
        vocab, category_index(raw_category, categories), categories, pl.Series(counts)
    )


def items_frame(
    vocab: pl.Series, category: pl.Series, categories: pl.Series, train_count: pl.Series
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """items.parquet and categories.parquet from per-item columns aligned with `vocab`:
    the category index (0 = unknown) and the training support."""
    items = pl.DataFrame(
        {
            "item": pl.Series(np.arange(1, len(vocab) + 1, dtype=np.uint32)),
            "raw_item": raw_text(vocab),
            "category": category.cast(pl.UInt32),
            "train_count": train_count.cast(pl.UInt64),
        }
    )
    cats = pl.DataFrame(
        {
            "category": pl.Series(np.arange(1, len(categories) + 1, dtype=np.uint32)),
            "raw_category": raw_text(categories),
        }
    )
    return items, cats
