"""The canonical interaction schema every adapter yields (see DESIGN.md)."""

from __future__ import annotations

import polars as pl

SPLITS = ("train", "valid", "test")  # in the order of their split codes
BEHAVIORS = ("pv", "fav", "cart", "buy")
Behavior = pl.Enum(list(BEHAVIORS))
# In artifacts and tensors a behaviour is a small integer; 0 is padding.
BEHAVIOR_INDEX = {name: i + 1 for i, name in enumerate(BEHAVIORS)}

TIMESTAMP = pl.Datetime("ms", "UTC")

# user_id / session_id / item_id / category_id keep the raw id type of the source
# (integers or strings); behavior and ts are fixed.
CANONICAL_COLUMNS = ("user_id", "session_id", "item_id", "category_id", "behavior", "ts")


def check_canonical(frame: pl.LazyFrame | pl.DataFrame, source: str) -> None:
    """Fail loudly when an adapter yields something other than the canonical schema."""
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    missing = [c for c in CANONICAL_COLUMNS if c not in schema]
    if missing:
        raise AssertionError(f"adapter {source} yields no column(s) {missing}")
    if schema["behavior"] != Behavior:
        raise AssertionError(f"adapter {source}: behavior is {schema['behavior']}, not {Behavior}")
    if schema["ts"] != TIMESTAMP:
        raise AssertionError(f"adapter {source}: ts is {schema['ts']}, not {TIMESTAMP}")


def seconds_to_ts(expr: pl.Expr) -> pl.Expr:
    """Unix seconds (integer or float) -> Datetime(ms, UTC)."""
    return (expr * 1000).round().cast(pl.Int64).cast(TIMESTAMP)


def ms_to_ts(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.Int64).cast(TIMESTAMP)


def canonical(
    lf: pl.LazyFrame,
    *,
    item: pl.Expr,
    behavior: pl.Expr | str,
    ts: pl.Expr,
    user: pl.Expr | None = None,
    session: pl.Expr | None = None,
    category: pl.Expr | None = None,
    id_dtype: pl.DataType = pl.UInt32,
) -> pl.LazyFrame:
    """Select the canonical columns in order; absent ids become typed nulls."""

    def nullable(expr: pl.Expr | None) -> pl.Expr:
        return expr if expr is not None else pl.lit(None, dtype=id_dtype)

    return lf.select(
        nullable(user).alias("user_id"),
        nullable(session).alias("session_id"),
        item.alias("item_id"),
        nullable(category).alias("category_id"),
        (pl.lit(behavior, dtype=Behavior) if isinstance(behavior, str) else behavior).alias(
            "behavior"
        ),
        ts.alias("ts"),
    )
