"""Loading: the adapter's canonical frame, collected through its checked reader, as the
compact columns a recipe works on (key, item, category, behavior, ts), with the rows it
cannot use dropped and counted."""

from __future__ import annotations

from typing import Literal

import polars as pl

from bench.datasets.io.diagnostics import collect_checked
from bench.datasets.protocols.base import DataInfo
from bench.errors import DataError


def collect(frame: pl.LazyFrame, data: DataInfo) -> pl.DataFrame:
    """Collect (streaming) through the adapter's checked reader: read errors -> DataError."""
    if data.adapter is None:
        return frame.collect(engine="streaming")
    return collect_checked(frame, data.adapter, engine="streaming")


def load_events(
    frame: pl.LazyFrame,
    data: DataInfo,
    *,
    sequence: Literal["user", "session"],
    with_row: bool = False,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """The canonical frame as compact recipe columns: key, item, category, behavior, ts.

    sequence "user": `key` is the raw user id; data without any user id falls back to its
    sessions; rows missing the key are dropped and counted. sequence "session": `key` is the
    session id (null where the data gives none) and `user` the user id, to cut sessions by
    inactivity. Rows missing the item are dropped and counted. `row` (file order) on request.
    """
    schema = frame.collect_schema()
    cols = [
        pl.col("user_id" if sequence == "user" else "session_id").alias("key"),
        pl.col("item_id").alias("item"),
        pl.col("category_id").alias("category"),
        (pl.col("behavior").to_physical() + 1).cast(pl.UInt8).alias("behavior"),
        pl.col("ts").dt.epoch("ms").alias("ts"),
    ]
    other = "session_id" if sequence == "user" else "user_id"
    if other in schema:
        cols.append(pl.col(other).alias("other"))
    if with_row:
        frame = frame.with_row_index("row")
        cols.insert(0, pl.col("row"))
    df = contiguous(collect(frame.select(cols), data))
    drops: dict[str, int] = {}
    if df.height == 0:
        raise DataError("the data set has no rows", hint="check that the raw files are not empty")
    if sequence == "user":
        if "other" in df.columns:
            if df["key"].null_count() == df.height and df["other"].null_count() < df.height:
                df = df.with_columns(key=pl.col("other"))  # no user ids at all: sessions
            df = df.drop("other")
        none_left = DataError(
            "no row has a user id (nor a session id)",
            column="user_id",
            hint="map a user column, or use a session protocol (session-time)",
        )
        keyed = pl.col("key").is_not_null()
        df = drop_unkeyed(df, df["key"].null_count(), keyed, drops, "missing_user_id", none_left)
    else:
        df = df.rename({"other": "user"}) if "other" in df.columns else df
        if "user" not in df.columns:
            df = df.with_columns(user=pl.lit(None, dtype=pl.UInt32))
        lost = df.select((pl.col("key").is_null() & pl.col("user").is_null()).sum()).item()
        none_left = DataError(
            "no row has a session id or a user id to cut sessions from",
            column="session_id",
            hint="map a session or a user column",
        )
        keyed = pl.col("key").is_not_null() | pl.col("user").is_not_null()
        df = drop_unkeyed(df, lost, keyed, drops, "missing_session_and_user_id", none_left)
    missing = df["item"].null_count()
    count_drop(drops, "missing_item_id", missing)
    if missing:
        df = df.filter(pl.col("item").is_not_null())
    return df, drops


def drop_unkeyed(
    df: pl.DataFrame,
    lost: int,
    keyed: pl.Expr,
    drops: dict[str, int],
    reason: str,
    none_left: DataError,
) -> pl.DataFrame:
    """The `keyed` rows, the `lost` others counted under `reason`; `none_left` when no row
    has a key (a recipe cannot form a single sequence)."""
    if lost == df.height:
        raise none_left
    count_drop(drops, reason, lost)
    return df.filter(keyed) if lost else df


def contiguous(df: pl.DataFrame) -> pl.DataFrame:
    """Each column in one chunk (a streaming read yields hundreds), so that NumPy views are
    free; one column at a time, to add at most one column to the peak memory."""
    for name in df.columns:
        if df[name].n_chunks() > 1:
            df = df.with_columns(df[name].rechunk())
    return df


def drop_missing_time(df: pl.DataFrame, drops: dict[str, int]) -> pl.DataFrame:
    missing = df["ts"].null_count()
    if missing:
        drops["missing_ts"] = missing
        df = df.filter(pl.col("ts").is_not_null())
    return df


def count_drop(drops: dict[str, int], reason: str, rows: int) -> None:
    if rows:
        drops[reason] = drops.get(reason, 0) + int(rows)
