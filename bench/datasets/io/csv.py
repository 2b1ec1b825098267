"""Delimited text files (CSV, TSV, MovieLens' '::'): a strict typed scan, and a diagnosis of
the first bad line when it fails."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from bench.datasets.io.diagnostics import first_bad_value, guard_required
from bench.datasets.io.fields import Field
from bench.datasets.io.text import (
    HEAD_BYTES,
    count_lines,
    did_you_mean,
    guess_separator,
    last_line,
    lines_of,
    read_head,
    scan_lines,
    sep_name,
    split_fields,
)
from bench.errors import DataError


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
            f"{sep_name(self.separator)}-separated columns "
            + ", ".join(f.name for f in self.fields)
            + ("" if self.header else " (no header)")
        )
        return f"{self.path.name} should hold {layout}"

    def _wrong_separator(self, line: str, lineno: int, want: int) -> DataError | None:
        found = guess_separator(line)
        if (
            found is None
            or found == self.separator
            or len(split_fields(line, found)) < max(2, want)
        ):
            return None
        hint = (
            f"pass {self.separator_option}={found!r}"
            if self.separator_option
            else f"{self._layout_hint()}; the file may have been re-saved by another tool: "
            "download it again"
        )
        return DataError(
            f"the file looks {sep_name(found)}-separated, not {sep_name(self.separator)}-separated",
            file=self.path,
            line=lineno,
            hint=hint,
        )

    def check(self) -> list[str]:
        """Cheap up-front checks of the first and last lines; the file's column names."""
        return self._check()[0]

    def _check(self) -> tuple[list[str], int]:
        """The column names, and how many blank lines precede the first line."""
        head = read_head(self.path)
        lines = lines_of(head)
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
        cells = [c.strip() for c in split_fields(first, self.separator)]
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
                    + did_you_mean(field.name, names),
                    file=self.path,
                    line=1,
                    column=field.name,
                    hint=hint,
                )
            if not any(line.strip() for line in lines[1:]) and len(head) < HEAD_BYTES:
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
        last, offset = last_line(self.path)
        quoted = self.quote_char is not None and self.quote_char in last
        if offset > 0 and not quoted and len(split_fields(last, self.separator)) < want:
            lineno = count_lines(self.path, offset) + 1
            raise DataError(
                f"the last line is truncated: {len(split_fields(last, self.separator))} of {want} fields "
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
        lf = self._scan_text(start, sep, {c: typed.get(c, pl.String) for c in physical})
        lf = lf.select(pl.col(column[f.name]).alias(f.name) for f in self.fields)
        return self._guarded(lf)

    def _scan_text(self, start: int, sep: str, schema: dict, **options) -> pl.LazyFrame:
        """`pl.scan_csv` of the file as laid out (header, blank lines at the top, quoting)."""
        return pl.scan_csv(
            self.path,
            has_header=self.header,
            skip_lines=start,
            separator=sep,
            quote_char=self.quote_char,
            schema=schema,
            null_values=list(self.null_values) or None,
            **options,
        )

    def _guarded(self, lf: pl.LazyFrame) -> pl.LazyFrame:
        lf = lf.filter(~pl.all_horizontal(pl.col(f.name).is_null() for f in self.fields))
        dtypes = {f.name: f.dtype for f in self.fields}
        return guard_required(lf, self.path, self.fields, dtypes, self._layout_hint())

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
            scan_lines(self.path)
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
        raw = self._scan_text(
            start,
            sep,
            dict.fromkeys(physical, pl.String),
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
        return first_bad_value(raw, self.fields, column, pl.col("__line"), self.path, "line")
