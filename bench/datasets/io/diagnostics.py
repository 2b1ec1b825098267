"""Bad input made readable: a failed scan becomes a `DataError` naming the file, the line,
the column and the fix.

The fast path stays a typed Polars scan; a required value that is missing trips a cheap
per-batch null guard (`null_guard`). Only when something fails does a diagnostic pass
(the adapter's `diagnose()`) re-read the raw text, with line numbers, to find the first
offending line. Collect an adapter's frames through `collect_checked(lf, adapter)`, or run
Polars work on them inside `with checked(adapter):` (for `sink_parquet` and the like).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from bench.datasets.io.fields import Field
from bench.errors import BenchError, DataError

# Polars failures that bad raw data produces (parse errors, strict casts, ragged lines).
DATA_FAILURES = (
    pl.exceptions.ComputeError,
    pl.exceptions.InvalidOperationError,
    pl.exceptions.NoDataError,
    pl.exceptions.ShapeError,
)


_GUARD_TEXT = re.compile(
    r"^(?P<file>.*), column '(?P<column>[^']*)': missing value in column '[^']*'\n"
    r"  fix: (?P<hint>[^\n]*)"
)


class MissingValueError(DataError):
    """Raised inside Polars by the null guard of a required column.

    Polars may re-create an exception from its text alone when it passes it on, so a bare
    rendered message is parsed back into file, column and fix.
    """

    def __init__(self, message: str, **where) -> None:
        found = None if where else _GUARD_TEXT.match(message)
        if found:
            message = f"missing value in column {found['column']!r}"
            where = {"file": found["file"], "column": found["column"], "hint": found["hint"]}
        super().__init__(message, **where)


def null_guard(path: Path, column: str, fix: str) -> Callable[[pl.Series], pl.Series]:
    """A per-batch check that a required column has no missing value (O(1) per batch)."""

    def guard(series: pl.Series) -> pl.Series:
        if series.null_count():
            raise MissingValueError(
                f"missing value in column {column!r}", file=path, column=column, hint=fix
            )
        return series

    return guard


def guard_required(
    lf: pl.LazyFrame,
    path: Path,
    fields: tuple[Field, ...],
    dtypes: dict[str, pl.DataType] | pl.Schema,
    fix: str,
) -> pl.LazyFrame:
    """`lf` with a null guard on each required field (its own fix, else `fix`)."""
    guards = [
        pl.col(f.name).map_batches(
            null_guard(path, f.name, f.fix or fix),
            return_dtype=dtypes[f.name],
            is_elementwise=True,
        )
        for f in fields
        if f.required
    ]
    return lf.with_columns(guards) if guards else lf


def first_bad_value(
    raw: pl.LazyFrame,
    fields: tuple[Field, ...],
    column: dict[str, str],
    line: pl.Expr,
    path: Path,
    unit: str,
) -> DataError | None:
    """The first row with a missing required value or a value its field rejects."""
    blank = pl.all_horizontal(pl.col(column[f.name]).is_null() for f in fields)
    flags = []
    for k, f in enumerate(fields):
        col = pl.col(column[f.name])
        missing = col.is_null() if f.required else pl.lit(False)
        flags.append((missing | (col.is_not_null() & ~f.is_valid(col))).alias(f"__bad{k}"))
    found = (
        raw.with_columns(flags, __line=line)
        .filter(~blank & pl.any_horizontal(pl.col(f"__bad{k}") for k in range(len(fields))))
        .head(1)
        .collect(engine="streaming")
    )
    if not found.height:
        return None
    row = found.row(0, named=True)
    k = next(k for k in range(len(fields)) if row[f"__bad{k}"])
    field = fields[k]
    value = row[column[field.name]]
    where = "" if unit == "line" else f"{unit} {row['__line']}: "
    if value is None:
        msg = f"{where}missing value in column {field.name!r}"
    else:
        msg = f"{where}{str(value)[:60]!r} is not {field.expect}"
    return DataError(
        msg, file=path, line=row["__line"], column=field.name, hint=field.fix or "fix or delete it"
    )


def _diagnose(adapter: object) -> DataError | None:
    diagnose = getattr(adapter, "diagnose", None)
    return diagnose() if callable(diagnose) else None


def _plain(err: DataError) -> DataError:
    """The same error without the text Polars appends when it re-raises a UDF's exception."""
    return DataError(
        err.message,
        file=err.file,
        line=err.line,
        column=err.column,
        option=err.option,
        hint=err.hint,
    )


@contextmanager
def checked(adapter: object) -> Iterator[None]:
    """Run Polars work on an adapter's frames; bad raw data surfaces as a located DataError.

    `adapter` is taken by its attributes (`diagnose()`, `name`, `root`), so that reading
    never imports the adapters that build on it.
    """
    try:
        yield
    except MissingValueError as err:  # a null guard fired: find the line
        raise (_diagnose(adapter) or _plain(err)) from err
    except BenchError:  # already located (or not about the raw files): as it is
        raise
    except DATA_FAILURES as err:
        found = _diagnose(adapter)
        if found is None:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            found = DataError(
                f"could not read data set {getattr(adapter, 'name', '?')!r}: {first}",
                file=getattr(adapter, "root", None),
                hint="check that the files are the publisher's, unmodified; "
                "re-download them if in doubt",
            )
        raise found from err


def collect_checked(lf: pl.LazyFrame, adapter: object, **collect_kwargs) -> pl.DataFrame:
    """`lf.collect(**collect_kwargs)`, with bad raw data raised as a located DataError."""
    with checked(adapter):
        return lf.collect(**collect_kwargs)
