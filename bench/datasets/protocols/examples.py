"""Sequences and examples: ordering events into sequences, the pointers from each target
to its history, and the per-split example tables."""

from __future__ import annotations

import numpy as np
import polars as pl

from bench.datasets.protocols.arrays import n_distinct
from bench.datasets.protocols.splits import BUY, NO_TARGET, SPLITS, TRAIN
from bench.errors import DataError


def sequence_index(keys: pl.Expr) -> pl.Expr:
    """0-based sequence number for rows already grouped by `keys` (a key change starts one)."""
    return (keys != keys.shift(1)).fill_null(True).cum_sum().cast(pl.UInt32) - 1


def _plain_ints(series: pl.Series) -> bool:
    """Numeric without nulls: its NumPy view is exact (nulls would turn into floats)."""
    return series.dtype.is_numeric() and series.null_count() == 0


def run_starts(keys: pl.Series) -> np.ndarray:
    """Per row: does a run of equal keys start here (the first row, or a key change)?"""
    n = len(keys)
    if not _plain_ints(keys):
        new = (keys != keys.shift(1)).fill_null(True)  # as `sequence_index`
        return new.to_numpy() if n else np.zeros(0, dtype=bool)
    values = keys.to_numpy()
    new = np.empty(n, dtype=bool)
    if n:
        new[0] = True
        np.not_equal(values[1:], values[:-1], out=new[1:])
    return new


def order_sequences(df: pl.DataFrame, *, by_time: bool = True) -> pl.DataFrame:
    """Rows grouped by `key`, sequences in order of first appearance, each in time order,
    ties (and everything, when not `by_time`) in file order.

    Data already in that order (Taobao ships each user's events together, in time order)
    is returned as it is: a check (one NumPy pass for integer keys and times) costs far
    less than sorting 100M rows.
    """
    if _plain_ints(df["key"]) and (not by_time or _plain_ints(df["ts"])):
        new = run_starts(df["key"])
        ordered = True
        if by_time and df.height > 1:
            ts = df["ts"].to_numpy()
            back = ts[1:] < ts[:-1]
            back &= ~new[1:]
            ordered = not back.any()
            del back
        # grouped iff no key starts two runs
        if ordered and n_distinct(df["key"].to_numpy()[new]) == np.count_nonzero(new):
            return df
    else:
        new_expr = (pl.col("key") != pl.col("key").shift(1)).fill_null(True)
        ordered_expr = (
            (new_expr | (pl.col("ts") >= pl.col("ts").shift(1))).all() if by_time else pl.lit(True)
        )
        check = df.select(
            ordered=ordered_expr,
            runs=new_expr.sum(),
            keys=pl.col("key").filter(new_expr).n_unique(),
        )
        if check["ordered"].item() and check["keys"].item() == check["runs"].item():
            return df
    first = pl.col("_row").min().over("key").alias("_first")
    keys = ["_first", "ts"] if by_time else ["_first"]
    return (
        df.with_row_index("_row")
        .with_columns(first)
        .sort(keys, maintain_order=True)
        .drop("_row", "_first")
    )


def pointers(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For events grouped by sequence: `first` (no earlier event) and `start` (row of the
    sequence's first event), vectorised in NumPy (UInt32 rows while they fit)."""
    n = len(seq)
    first = np.ones(n, dtype=bool)
    if n > 1:
        np.not_equal(seq[1:], seq[:-1], out=first[1:])
    start = np.arange(n, dtype=np.uint32 if n < 2**32 else np.uint64)
    start[~first] = 0
    np.maximum.accumulate(start, out=start)
    return first, start


def examples_by_split(
    events: pl.DataFrame, *, target: str, restrict_train: bool
) -> dict[str, pl.DataFrame]:
    """Every event with an earlier event of its sequence is a target in its split.

    With target "buy", valid/test keep buy targets only, and train too when `restrict_train`.
    """
    return examples_and_targets(events, target=target, restrict_train=restrict_train)[0]


def examples_and_targets(
    events: pl.DataFrame, *, target: str, restrict_train: bool
) -> tuple[dict[str, pl.DataFrame], np.ndarray]:
    """`examples_by_split`, and per event row the split whose example targets it
    (NO_TARGET: none), which `split_counts` takes as it is. Each row gets one such code,
    so each split is one filter."""
    first, start = pointers(events["seq"].to_numpy())
    code = events["split"].to_numpy().copy()
    code[first] = NO_TARGET
    if target == "buy":
        other = events["behavior"].to_numpy() != BUY
        if not restrict_train:
            other &= code != TRAIN
        code[other] = NO_TARGET
    del first
    rows = pl.DataFrame({"start": start, "code": code}).with_row_index("pos")
    del start
    cast = pl.col("pos", "start").cast(pl.UInt64)
    examples = {
        name: rows.filter(pl.col("code") == c).select(cast) for c, name in enumerate(SPLITS)
    }
    return examples, code


def require_examples(
    examples: dict[str, pl.DataFrame],
    hints: dict[str, str],
    splits=SPLITS,
    spans: dict[str, str] | None = None,
) -> None:
    """A split left without examples is a clear error naming its time span (when it has
    one) and the parameters to relax."""
    for split in splits:
        if examples[split].height == 0:
            span = f" ({spans[split]})" if spans and split in spans else ""
            raise DataError(
                f"the {split} split{span} has no examples after the recipe's filters",
                option="--set",
                hint=hints.get(split, "relax the protocol's filters"),
            )
