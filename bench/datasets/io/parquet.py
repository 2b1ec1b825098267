"""Parquet tables: fields matched by column name, stored types kept, nulls guarded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from bench.datasets.io.diagnostics import first_bad_value, guard_required
from bench.datasets.io.fields import Field
from bench.datasets.io.text import did_you_mean
from bench.errors import DataError


@dataclass(frozen=True)
class ParquetFile:
    """A Parquet table; fields are matched by column name and keep their stored types."""

    path: Path
    fields: tuple[Field, ...]
    column_fix: str = ""

    def check(self) -> pl.Schema:
        try:
            schema = pl.read_parquet_schema(self.path)
        except Exception as err:  # any reader failure means the same thing to the user
            raise DataError(
                f"not a readable Parquet file ({str(err).splitlines()[0]})",
                file=self.path,
                hint="write it again with a Parquet writer, or export CSV instead",
            ) from err
        for f in self.fields:
            if f.name not in schema:
                names = list(schema)
                raise DataError(
                    f"no column {f.name!r} (found: {', '.join(names)})"
                    + did_you_mean(f.name, names),
                    file=self.path,
                    column=f.name,
                    hint=self.column_fix or "fix the column mapping",
                )
        if pl.scan_parquet(self.path).select(pl.len()).collect().item() == 0:
            raise DataError("the file has no rows", file=self.path, line=1, hint="export it again")
        return pl.Schema({f.name: schema[f.name] for f in self.fields})

    def scan(self) -> pl.LazyFrame:
        schema = self.check()
        lf = pl.scan_parquet(self.path).select(f.name for f in self.fields)
        return guard_required(lf, self.path, self.fields, schema, "fill or drop the rows")

    def diagnose(self) -> DataError | None:
        try:
            self.check()
        except DataError as err:
            return err
        column = {f.name: f.name for f in self.fields}
        raw = self.raw_table()
        return first_bad_value(raw, self.fields, column, pl.col("__line"), self.path, "row")

    def raw_table(self) -> pl.LazyFrame:
        """Every field as text, with its 1-based row number as `__line`."""
        return (
            pl.scan_parquet(self.path)
            .select(pl.col(f.name).cast(pl.String) for f in self.fields)
            .with_row_index("__row")
            .select(pl.exclude("__row"), __line=pl.col("__row") + 1)
        )
