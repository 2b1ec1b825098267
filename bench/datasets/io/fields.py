"""Fields: the columns a raw file must provide, their parsed type, and how a bad value is
explained (what was expected, how to fix it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

U32_MAX = 2**32 - 1
ID_EXPECT = f"an integer id in 0..{U32_MAX}"
ID_FIX = (
    f"ids must be whole numbers from 0 to {U32_MAX}; fix or delete the line, "
    "or read the file with the custom adapter, which keeps ids as text"
)


@dataclass(frozen=True)
class Field:
    """One column a file must provide.

    `dtype` is what the fast path parses the text into (String when an adapter converts it
    later); `valid` maps the raw text (a String expression) to a Boolean for the diagnostic
    pass; without it a value is valid when it casts to `dtype`.
    """

    name: str
    dtype: pl.DataType = pl.String
    required: bool = True
    aliases: tuple[str, ...] = ()
    valid: Callable[[pl.Expr], pl.Expr] | None = None
    expect: str = "a value"
    fix: str = ""

    def is_valid(self, raw: pl.Expr) -> pl.Expr:
        if self.valid is not None:
            return self.valid(raw)
        if self.dtype == pl.String:
            return pl.lit(True)
        return raw.cast(self.dtype, strict=False).is_not_null()


def id_field(name: str, *aliases: str, required: bool = True) -> Field:
    """A non-negative integer id that fits in 32 bits (out-of-range ids fail to parse)."""
    return Field(name, pl.UInt32, required, aliases, expect=ID_EXPECT, fix=ID_FIX)


def int_field(name: str, *aliases: str, expect: str, fix: str = "", required: bool = True) -> Field:
    return Field(name, pl.Int64, required, aliases, expect=expect, fix=fix)


def float_field(
    name: str, *aliases: str, expect: str, fix: str = "", required: bool = True
) -> Field:
    return Field(name, pl.Float64, required, aliases, expect=expect, fix=fix)


def choice_field(name: str, values: tuple[str, ...], *aliases: str, fix: str = "") -> Field:
    """A text column whose values must be one of `values` (e.g. behaviour names)."""
    shown = ", ".join(values)
    return Field(
        name,
        pl.String,
        True,
        aliases,
        valid=lambda raw: raw.is_in(list(values)),
        expect=f"one of {shown}",
        fix=fix or f"use one of {shown}, or delete the line",
    )


def date_field(name: str, fmt: str, *aliases: str, expect: str) -> Field:
    return Field(
        name,
        pl.String,
        True,
        aliases,
        valid=lambda raw: raw.str.strptime(pl.Date, fmt, strict=False).is_not_null(),
        expect=expect,
        fix=f"write dates as {expect}, or delete the line",
    )
