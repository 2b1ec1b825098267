"""The canonical interaction schema every adapter yields (see DESIGN.md)."""

from __future__ import annotations

import polars as pl

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
