"""One sequence per line, as session-based papers publish their data: item ids in order,
the line standing for both the user and the session, the position for time."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from bench.datasets.io.fields import ID_EXPECT, ID_FIX
from bench.datasets.io.text import lines_of, read_head, scan_lines, split_fields
from bench.datasets.schema import canonical, ms_to_ts
from bench.errors import DataError

_INT_TOKEN = re.compile(r"^\s*\d+\s*$")


@dataclass(frozen=True)
class SequenceFile:
    """One sequence per line (session-based papers' format): item ids in order, 0 = padding.

    `separator` is ',' or ' ' (any run of spaces or tabs); None takes it from the first line.
    """

    path: Path
    separator: str | None = None

    def check(self) -> str:
        head = read_head(self.path)
        first = next((line for line in lines_of(head) if line.strip()), None)
        if first is None:
            raise DataError(
                "the file is empty",
                file=self.path,
                line=1,
                hint="a sequence file holds one session per line: item ids separated by commas "
                "or spaces",
            )
        sep = self.separator or ("," if "," in first else " ")
        tokens = [t for t in split_fields(first, sep) if t.strip()]
        if not all(_INT_TOKEN.match(t) for t in tokens):
            raise DataError(
                f"line 1 is not a sequence of item ids: {first[:60]!r}",
                file=self.path,
                line=1,
                hint="a sequence file has no header, one session per line, integer item ids "
                "separated by commas or spaces (0 = padding); for a table with a header, "
                "use format=csv with columns=user=...,item=...,time=...",
            )
        return sep

    def _tokens(self, sep: str) -> pl.LazyFrame:
        text = pl.col("line").str.strip_chars()
        if sep == " ":
            text = text.str.replace_all(r"[ \t]+", " ")
        return (
            scan_lines(self.path)
            .select(
                (pl.col("i") + 1).cast(pl.UInt32).alias("line_no"), text.str.split(sep).alias("tok")
            )
            .with_columns(pl.col("tok").list.eval(pl.element().str.strip_chars()))
        )

    def scan(self) -> pl.LazyFrame:
        """Columns line_no (UInt32, 1-based), item (UInt32), pos (UInt64, global order)."""
        sep = self.check()
        return (
            self._tokens(sep)
            .explode("tok")
            .filter(pl.col("tok").str.len_bytes() > 0)
            .select("line_no", pl.col("tok").cast(pl.UInt32).alias("item"))
            .filter(pl.col("item") != 0)
            .with_row_index("pos")
            .with_columns(pl.col("pos").cast(pl.UInt64))
        )

    def diagnose(self) -> DataError | None:
        try:
            sep = self.check()
        except DataError as err:
            return err
        bad_token = (pl.element().str.len_bytes() > 0) & pl.element().cast(
            pl.UInt32, strict=False
        ).is_null()
        found = (
            self._tokens(sep)
            .with_columns(bad=pl.col("tok").list.eval(bad_token))
            .filter(pl.col("bad").list.any())
            .head(1)
            .collect(engine="streaming")
        )
        if not found.height:
            return None
        line_no, tokens, bad = found.row(0)
        k = bad.index(True)
        return DataError(
            f"token {k + 1} of the line, {tokens[k][:40]!r}, is not {ID_EXPECT}",
            file=self.path,
            line=line_no,
            column="item_id",
            hint=f"{ID_FIX}; 0 is padding and is dropped",
        )


def sequences_canonical(lf: pl.LazyFrame) -> pl.LazyFrame:
    """A `SequenceFile.scan()` in canonical form: the line is the user and the session,
    ts is the global position in ms after the epoch (order only, no clock time)."""
    return canonical(
        lf,
        user=pl.col("line_no"),
        session=pl.col("line_no"),
        item=pl.col("item"),
        behavior="pv",
        ts=ms_to_ts(pl.col("pos")),
    )
