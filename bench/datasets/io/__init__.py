"""Reading raw files strictly and lazily, with bad input made readable.

`fields` (what a column must hold), `text` (sniffing compression, separators, first and
last lines), `csv`, `parquet` and `sequences` (one file kind each: a typed scan and a
diagnosis) and `diagnostics` (located `DataError`s, `checked` / `collect_checked`).

Contract for callers (protocols, CLI): collect what an adapter's `scan()` returns through
`collect_checked(lf, adapter)`, or run any Polars work on it inside `with checked(adapter):`
(for `sink_parquet` and the like); `adapter.load()` does the former for the whole frame.
`scan()` itself already checks each file's header, first and last line up front. Without
`checked`, a missing value still raises `MissingValueError` (a DataError naming file and
column, no line) and an unparseable one a plain Polars error.

Blank lines hold no event and are skipped; a truncated last line (fewer fields than the
header or the format says) is an error, never a silent drop.
"""
