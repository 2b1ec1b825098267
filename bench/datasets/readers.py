"""Shared reading helpers for the adapters: strict, lazy scans and bad input made readable.

The fast path stays a typed Polars scan: ids parse straight into UInt32, a value that does
not parse makes Polars fail at collect time, and a required value that is missing (a short
line) trips a cheap per-batch null guard. Only when something fails does a diagnostic
pass re-read the raw text as strings, with line numbers, to find the first offending line
and turn it into a `DataError` naming the file, the line (1-based, header included), the
column and the fix.

Contract for callers (protocols, CLI): collect what an adapter's `scan()` returns through
`collect_checked(lf, adapter)`, or run any Polars work on it inside `with checked(adapter):`
(for `sink_parquet` and the like); `adapter.load()` does the former for the whole frame.
`scan()` itself already checks each file's header, first and last line up front. Without
`checked`, a missing value still raises `MissingValueError` (a DataError naming file and
column, no line) and an unparseable one a plain Polars error.

Blank lines hold no event and are skipped; a truncated last line (fewer fields than the
header or the format says) is an error, never a silent drop.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import polars as pl

from bench.datasets.registry import Adapter
from bench.datasets.schema import TIMESTAMP, Behavior
from bench.errors import BenchError, ConfigError, DataError

U32_MAX = 2**32 - 1
ID_EXPECT = f"an integer id in 0..{U32_MAX}"
ID_FIX = (
    f"ids must be whole numbers from 0 to {U32_MAX}; fix or delete the line, "
    "or read the file with the custom adapter, which keeps ids as text"
)
_SEPARATOR_NAMES = {
    ",": "comma",
    ";": "semicolon",
    "\t": "tab",
    "|": "pipe",
    "::": "'::'",
    " ": "space",
}
_CANDIDATE_SEPARATORS = ("\t", ";", ",", "|", "::", ":")
_HEAD_BYTES = 1 << 20
# Polars failures that bad raw data produces (parse errors, strict casts, ragged lines).
_DATA_FAILURES = (
    pl.exceptions.ComputeError,
    pl.exceptions.InvalidOperationError,
    pl.exceptions.NoDataError,
    pl.exceptions.ShapeError,
)


def _sep_name(sep: str) -> str:
    return _SEPARATOR_NAMES.get(sep, repr(sep))


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


# ---------------------------------------------------------------- raw text helpers


# Magic bytes of compressed files and how to unpack each (a gzip file read as text
# looks like noise whose most frequent punctuation is taken for a separator).
_COMPRESSED = (
    (b"\x1f\x8b", "gzip", "gunzip -k {name}"),
    (b"PK\x03\x04", "zip", "unzip {name}"),
    (b"PK\x05\x06", "zip", "unzip {name}"),
    (b"\xfd7zXZ\x00", "xz", "unxz -k {name}"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd {name}"),
)
_BZIP2 = re.compile(rb"^BZh[1-9](\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)")


def compression_of(head: bytes) -> tuple[str, str] | None:
    """(kind, command template) when `head` starts like a compressed file, else None."""
    for magic, kind, command in _COMPRESSED:
        if head.startswith(magic):
            return kind, command
    if _BZIP2.match(head):
        return "bzip2", "bunzip2 -k {name}"
    return None


def refuse_compressed(path: Path, head: bytes) -> None:
    """A DataError that says "this is a gzip file; decompress it" instead of a bogus
    diagnosis of its bytes as text."""
    found = compression_of(head)
    if found is None:
        return
    kind, command = found
    raise DataError(
        f"this is a {kind} file, not text",
        file=path,
        hint=f"decompress it ({command.format(name=path.name)}) and read the file it unpacks to",
    )


def _read_head(path: Path) -> bytes:
    """The first MiB; a compressed file is refused here, before any text sniffing."""
    with open(path, "rb") as fh:
        head = fh.read(_HEAD_BYTES)
    refuse_compressed(path, head)
    return head


def _lines_of(data: bytes) -> list[str]:
    text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
    return [line.rstrip("\r") for line in text.split("\n")]


def _last_line(path: Path) -> tuple[str, int]:
    """The last non-blank line and the byte offset where it starts."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        start = max(0, size - _HEAD_BYTES)
        fh.seek(start)
        tail = fh.read()
    end = len(tail.rstrip(b"\r\n \t"))
    begin = tail.rfind(b"\n", 0, end) + 1
    return tail[begin:end].decode("utf-8", errors="replace").rstrip("\r"), start + begin


def count_lines(path: Path, upto: int | None = None) -> int:
    """Newlines before byte offset `upto` (whole file when None), in 16 MiB chunks."""
    total, read = 0, 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            if upto is not None and read + len(chunk) > upto:
                return total + chunk[: upto - read].count(b"\n")
            total += chunk.count(b"\n")
            read += len(chunk)
    return total


def _split(line: str, sep: str) -> list[str]:
    return line.split(sep) if sep != " " else line.split()


def guess_separator(line: str) -> str | None:
    """The separator that splits a header or data line into the most fields, if any does."""
    best, count = None, 0
    for sep in _CANDIDATE_SEPARATORS:
        n = line.count(sep)
        if n > count:
            best, count = sep, n
    return best


def _did_you_mean(name: str, found: list[str]) -> str:
    close = difflib.get_close_matches(name, found, n=1, cutoff=0.6)
    if not close:
        close = [f for f in found if f.lower().replace("_", "") == name.lower().replace("_", "")]
    return f" (did you mean {close[0]!r}?)" if close else ""


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


def _null_guard(path: Path, column: str, fix: str) -> Callable[[pl.Series], pl.Series]:
    """A per-batch check that a required column has no missing value (O(1) per batch)."""

    def guard(series: pl.Series) -> pl.Series:
        if series.null_count():
            raise MissingValueError(
                f"missing value in column {column!r}", file=path, column=column, hint=fix
            )
        return series

    return guard


# ---------------------------------------------------------------- CSV files


@dataclass(frozen=True)
class CsvFile:
    """A delimited text file of known layout: what an adapter reads, and how to diagnose it.

    `separator` may be the two-character '::' of MovieLens 1M (read as ':' with empty gap
    columns in between). With `header`, fields are matched by name (or an alias) and extra
    columns are ignored; without, by position.
    """

    path: Path
    fields: tuple[Field, ...]
    separator: str = ","
    header: bool = True
    quote_char: str | None = '"'
    null_values: tuple[str, ...] = ()
    what: str = ""  # the publisher's layout, for messages
    separator_option: str | None = None  # the option that changes the separator, if any
    column_fix: str = ""  # the fix for a missing column (default: the expected layout)
    read_as: str = ""  # how a guessed layout was taken (custom files), for every shape error

    def _layout_hint(self) -> str:
        if self.read_as:
            return (
                f"{self.path.name} was read as {self.read_as}; if that is not its layout, "
                "say so with header=, separator=, format= or columns="
            )
        layout = self.what or (
            f"{_sep_name(self.separator)}-separated columns "
            + ", ".join(f.name for f in self.fields)
            + ("" if self.header else " (no header)")
        )
        return f"{self.path.name} should hold {layout}"

    def _wrong_separator(self, line: str, lineno: int, want: int) -> DataError | None:
        found = guess_separator(line)
        if found is None or found == self.separator or len(_split(line, found)) < max(2, want):
            return None
        hint = (
            f"pass {self.separator_option}={found!r}"
            if self.separator_option
            else f"{self._layout_hint()}; the file may have been re-saved by another tool: "
            "download it again"
        )
        return DataError(
            f"the file looks {_sep_name(found)}-separated, not {_sep_name(self.separator)}-separated",
            file=self.path,
            line=lineno,
            hint=hint,
        )

    def check(self) -> list[str]:
        """Cheap up-front checks of the first and last lines; the file's column names."""
        return self._check()[0]

    def _check(self) -> tuple[list[str], int]:
        """The column names, and how many blank lines precede the first line."""
        head = _read_head(self.path)
        lines = _lines_of(head)
        if not head.strip():
            raise DataError(
                "the file is empty",
                file=self.path,
                line=1,
                hint=f"{self._layout_hint()}; download or export it again",
            )
        start = next(i for i, line in enumerate(lines) if line.strip())
        if self.header and start > 0:
            raise DataError(
                "the file starts with an empty line; the header must be line 1",
                file=self.path,
                line=1,
                hint="delete the empty line(s) at the top",
            )
        first = lines[start]
        cells = [c.strip() for c in _split(first, self.separator)]
        if self.header:
            names = cells
            missing = [f for f in self.fields if not ({f.name, *f.aliases} & set(names))]
            if missing:
                wrong = self._wrong_separator(first, 1, len(self.fields))
                if wrong:
                    raise wrong
                field = missing[0]
                hint = self.column_fix or (
                    f"the header must name {', '.join(f.name for f in self.fields)}; "
                    f"{self._layout_hint()}"
                )
                raise DataError(
                    f"no column {field.name!r} in the header (found: {', '.join(names)})"
                    + _did_you_mean(field.name, names),
                    file=self.path,
                    line=1,
                    column=field.name,
                    hint=hint,
                )
            if not any(line.strip() for line in lines[1:]) and len(head) < _HEAD_BYTES:
                raise DataError(
                    "the file has a header but no data rows",
                    file=self.path,
                    line=2,
                    hint=f"{self._layout_hint()}; export or download it again",
                )
        else:
            names = [f.name for f in self.fields]
            if len(cells) != len(self.fields):
                wrong = self._wrong_separator(first, start + 1, len(self.fields))
                if wrong:
                    raise wrong
                raise DataError(
                    f"the line has {len(cells)} fields, expected {len(self.fields)}",
                    file=self.path,
                    line=start + 1,
                    hint=self._layout_hint(),
                )
        want = len(names)
        last, offset = _last_line(self.path)
        quoted = self.quote_char is not None and self.quote_char in last
        if offset > 0 and not quoted and len(_split(last, self.separator)) < want:
            lineno = count_lines(self.path, offset) + 1
            raise DataError(
                f"the last line is truncated: {len(_split(last, self.separator))} of {want} fields "
                f"({last[:60]!r})",
                file=self.path,
                line=lineno,
                hint="the file was cut short (an interrupted download or copy?): download it "
                f"again, or delete line {lineno}",
            )
        return names, start

    def _physical(self, names: list[str]) -> tuple[str, list[str]]:
        """Polars separator and physical column names ('::' becomes ':' plus gap columns)."""
        if self.separator != "::":
            return self.separator, names
        cols: list[str] = []
        for i, name in enumerate(names):
            cols += [name] if i == 0 else [f"__gap{i}", name]
        return ":", cols

    def _resolve(self, names: list[str]) -> dict[str, str]:
        """Field name -> the file's column name."""
        if not self.header:
            return {f.name: f.name for f in self.fields}
        return {f.name: next(n for n in (f.name, *f.aliases) if n in names) for f in self.fields}

    def scan(self) -> pl.LazyFrame:
        """The fields, typed and renamed to `Field.name`; blank lines skipped; nulls guarded."""
        names, start = self._check()
        column = self._resolve(names)
        typed = {column[f.name]: f.dtype for f in self.fields}
        sep, physical = self._physical(names)
        lf = pl.scan_csv(
            self.path,
            has_header=self.header,
            skip_lines=start,
            separator=sep,
            quote_char=self.quote_char,
            schema={c: typed.get(c, pl.String) for c in physical},
            null_values=list(self.null_values) or None,
        )
        lf = lf.select(pl.col(column[f.name]).alias(f.name) for f in self.fields)
        return self._guarded(lf)

    def _guarded(self, lf: pl.LazyFrame) -> pl.LazyFrame:
        lf = lf.filter(~pl.all_horizontal(pl.col(f.name).is_null() for f in self.fields))
        guards = [
            pl.col(f.name).map_batches(
                _null_guard(self.path, f.name, f.fix or self._layout_hint()),
                return_dtype=f.dtype,
                is_elementwise=True,
            )
            for f in self.fields
            if f.required
        ]
        return lf.with_columns(guards) if guards else lf

    def diagnose(self) -> DataError | None:
        """Find the first bad line: a wrong field count, then a missing or unparseable value."""
        try:
            names, start = self._check()
        except DataError as err:
            return err
        return self._diagnose_counts(len(names)) or self._diagnose_values(names, start)

    def _diagnose_counts(self, want: int) -> DataError | None:
        text = pl.col("line").str.strip_suffix("\r")
        count = text.str.count_matches(self.separator, literal=True) + 1
        if self.separator == " ":
            count = text.str.strip_chars().str.count_matches(r"\s+") + 1
        bad = text.is_not_null() & (text.str.strip_chars() != "") & (count != want)
        if self.quote_char is not None:
            bad = bad & ~text.str.contains(self.quote_char, literal=True)
        found = (
            _scan_lines(self.path)
            .filter(pl.col("i") >= int(self.header))
            .filter(bad)
            .select("i", text, count.alias("n"))
            .head(1)
            .collect(engine="streaming")
        )
        if not found.height:
            return None
        i, line, n = found.row(0)
        if n < want:
            msg = f"the line has {n} of {want} fields (cut short, or another separator?)"
        else:
            msg = f"the line has {n} fields, expected {want}"
        wrong = self._wrong_separator(line, i + 1, want)
        return wrong or DataError(
            f"{msg}: {line[:60]!r}",
            file=self.path,
            line=i + 1,
            hint=f"{self._layout_hint()}; fix or delete line {i + 1}",
        )

    def raw_table(self) -> pl.LazyFrame:
        """Every column as text, renamed to the fields' names, with its 1-based `__line`."""
        names, start = self._check()
        return self._raw(names, start)

    def _raw(self, names: list[str], start: int) -> pl.LazyFrame:
        column = self._resolve(names)
        sep, physical = self._physical(names)
        raw = pl.scan_csv(
            self.path,
            has_header=self.header,
            skip_lines=start,
            separator=sep,
            quote_char=self.quote_char,
            schema=dict.fromkeys(physical, pl.String),
            null_values=list(self.null_values) or None,
            truncate_ragged_lines=True,
            encoding="utf8-lossy",
        ).with_row_index("__row")
        return raw.select(
            *(pl.col(column[f.name]).alias(f.name) for f in self.fields),
            __line=pl.col("__row") + 1 + int(self.header) + start,
        )

    def _diagnose_values(self, names: list[str], start: int) -> DataError | None:
        column = {f.name: f.name for f in self.fields}
        raw = self._raw(names, start)
        return _first_bad_value(raw, self.fields, column, pl.col("__line"), self.path, "line")


def _scan_lines(path: Path) -> pl.LazyFrame:
    """Every line of a text file as one string column `line`, with its 0-based index `i`."""
    return pl.scan_csv(
        path,
        has_header=False,
        separator="\x1f",
        quote_char=None,
        schema={"line": pl.String},
        truncate_ragged_lines=True,
        encoding="utf8-lossy",
    ).with_row_index("i")


def _first_bad_value(
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


# ---------------------------------------------------------------- other file kinds


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
                    + _did_you_mean(f.name, names),
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
        guards = [
            pl.col(f.name).map_batches(
                _null_guard(self.path, f.name, f.fix or "fill or drop the rows"),
                return_dtype=schema[f.name],
                is_elementwise=True,
            )
            for f in self.fields
            if f.required
        ]
        return lf.with_columns(guards) if guards else lf

    def diagnose(self) -> DataError | None:
        try:
            self.check()
        except DataError as err:
            return err
        column = {f.name: f.name for f in self.fields}
        raw = self.raw_table()
        return _first_bad_value(raw, self.fields, column, pl.col("__line"), self.path, "row")

    def raw_table(self) -> pl.LazyFrame:
        """Every field as text, with its 1-based row number as `__line`."""
        return (
            pl.scan_parquet(self.path)
            .select(pl.col(f.name).cast(pl.String) for f in self.fields)
            .with_row_index("__row")
            .select(pl.exclude("__row"), __line=pl.col("__row") + 1)
        )


_INT_TOKEN = re.compile(r"^\s*\d+\s*$")


@dataclass(frozen=True)
class SequenceFile:
    """One sequence per line (session-based papers' format): item ids in order, 0 = padding.

    `separator` is ',' or ' ' (any run of spaces or tabs); None takes it from the first line.
    """

    path: Path
    separator: str | None = None

    def check(self) -> str:
        head = _read_head(self.path)
        first = next((line for line in _lines_of(head) if line.strip()), None)
        if first is None:
            raise DataError(
                "the file is empty",
                file=self.path,
                line=1,
                hint="a sequence file holds one session per line: item ids separated by commas "
                "or spaces",
            )
        sep = self.separator or ("," if "," in first else " ")
        tokens = [t for t in _split(first, sep) if t.strip()]
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
            _scan_lines(self.path)
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


Source = CsvFile | ParquetFile | SequenceFile


# ---------------------------------------------------------------- canonical frames


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


# ---------------------------------------------------------------- adapters and collecting


def _truthy(value: object, option: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(
        f"{value!r} is not true or false", option=option, hint=f"pass {option}=true|false"
    )


class SourceAdapter(Adapter):
    """An adapter whose raw files are `Source`s, so that bad input can be diagnosed.

    Subclasses implement `sources()` (the files actually read, required ones via
    `self.require`) and `scan()`; `option_help` lists the options they accept.
    """

    option_help: ClassVar[dict[str, str]] = {}

    def sources(self) -> list[Source]:
        raise NotImplementedError

    def check_options(self) -> None:
        for key, value in self.options.items():
            if value is not None and key not in self.option_help:
                takes = ", ".join(self.option_help) or "no options"
                raise ConfigError(
                    f"data set {self.name!r} has no option {key!r}",
                    option=key,
                    hint=f"{self.name} takes: {takes}",
                )

    def option(self, key: str, default: object = None) -> object:
        value = self.options.get(key)
        return default if value is None else value

    def flag(self, key: str, default: bool) -> bool:
        return _truthy(self.option(key, default), key)

    def diagnose(self) -> DataError | None:
        """The first problem in the raw files, as a DataError with file, line and column."""
        try:
            sources = self.sources()
        except BenchError as err:
            return err if isinstance(err, DataError) else None
        for source in sources:
            found = source.diagnose()
            if found is not None:
                return found
        return None

    def load(self, **collect_kwargs) -> pl.DataFrame:
        """The whole canonical frame, collected; bad input raises DataError."""
        return collect_checked(self.scan(), self, **collect_kwargs)

    def raw_files(self) -> list[Path]:
        try:
            return [s.path for s in self.sources()]
        except BenchError:
            return super().raw_files()


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
def checked(adapter: Adapter) -> Iterator[None]:
    """Run Polars work on an adapter's frames; bad raw data surfaces as a located DataError."""
    try:
        yield
    except MissingValueError as err:  # a null guard fired: find the line
        raise (_diagnose(adapter) or _plain(err)) from err
    except BenchError:  # already located (or not about the raw files): as it is
        raise
    except _DATA_FAILURES as err:
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


def collect_checked(lf: pl.LazyFrame, adapter: Adapter, **collect_kwargs) -> pl.DataFrame:
    """`lf.collect(**collect_kwargs)`, with bad raw data raised as a located DataError."""
    with checked(adapter):
        return lf.collect(**collect_kwargs)
