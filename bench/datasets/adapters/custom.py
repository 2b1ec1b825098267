"""Your own interaction log, which is what most users bring.

Reads CSV / TSV / Parquet tables with a column mapping, RecBole atomic `.inter` files,
and one-sequence-per-line text files as session-based papers publish them. Options
(`get_adapter("custom", data_dir, **options)`, or `--option key=value` on the CLI):

- `path`: the file, absolute or relative to the data folder; default: the only data
  file in the folder (or the folder itself when it names a file).
- `format`: csv | tsv | parquet | inter | sequences; default from the extension, and a
  .csv / .txt file whose first line is all integers is read as sequences.
- `columns`: "user=COL,item=COL,time=COL[,behavior=COL,category=COL,session=COL]" (or a
  dict); default: recognised header names (user_id, userId, item_id, movieId, timestamp,
  session_id, ...; RecBole's ":token" tags are ignored). `item` and one of `user` /
  `session` are required; without `time` the file order is the order.
- `separator`: the field separator of a CSV (default: sniffed from the header line).
- `time_unit`: s | ms | us | iso | order; default: detected from the first 1,000 values
  (numbers of 1e8-1e11 are seconds, 1e11-1e14 ms, 1e14-1e17 us, small integers an order
  index; text parsed as ISO-8601). `order` (or no time column) means no clock time.
- `time_format`: a strftime format for text times (default: inferred by Polars).
- `tz`: the time zone of text times that carry no offset (default UTC).
- `behaviors`: "RAW=pv,RAW=buy,..." maps raw behaviour values (case-insensitive) onto
  pv / fav / cart / buy, on top of common names (view, click, addtocart, purchase, ...).
  Without a behaviour column every event is pv.

Ids keep their raw type: text for CSV, the stored type for Parquet, integers for
sequences. Sequence files: the line is the session (and the user), 0 is padding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import polars as pl

from bench.datasets.readers import (
    CsvFile,
    Field,
    ParquetFile,
    SequenceFile,
    Source,
    SourceAdapter,
    canonical,
    guess_separator,
    ms_to_ts,
    sequences_canonical,
)
from bench.datasets.registry import register_dataset
from bench.datasets.schema import BEHAVIORS, TIMESTAMP, Behavior
from bench.errors import BenchError, ConfigError, DataError

ROLES = ("user", "item", "time", "behavior", "category", "session")
ALIASES = {
    "user": ("user_id", "userid", "user", "visitorid", "visitor_id", "customer_id", "uid"),
    "item": ("item_id", "itemid", "item", "movieid", "movie_id", "product_id", "productid", "sku"),
    "time": ("timestamp", "ts", "time", "datetime", "event_time", "time_stamp", "date"),
    "behavior": ("behavior", "behaviour", "behavior_type", "event", "event_type", "action"),
    "category": ("category_id", "categoryid", "category", "cat_id", "cate_id"),
    "session": ("session_id", "sessionid", "session"),
}
SYNONYMS = {
    **{b: b for b in BEHAVIORS},
    **dict.fromkeys(("view", "views", "click", "clicks", "pageview", "page_view", "detail"), "pv"),
    **dict.fromkeys(("favorite", "favourite", "like", "wishlist", "collect"), "fav"),
    **dict.fromkeys(("addtocart", "add_to_cart", "add-to-cart", "add to cart", "basket"), "cart"),
    **dict.fromkeys(("purchase", "transaction", "order", "checkout", "sale"), "buy"),
}
FORMATS = ("csv", "tsv", "parquet", "inter", "sequences")
UNITS = ("s", "ms", "us", "iso", "order")
_SCALE = {"s": 1000.0, "ms": 1.0, "us": 0.001}
_EXTENSIONS = {
    ".csv": "csv",
    ".txt": "csv",
    ".dat": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".inter": "inter",
}
_SEPARATORS = {"comma": ",", "tab": "\t", "\\t": "\t", "semicolon": ";", "pipe": "|", "space": " "}
_INTEGER = re.compile(r"^\s*-?\d+\s*$")
_COLUMNS_HINT = (
    "pass columns=user=COLUMN,item=COLUMN,time=COLUMN (behavior=, category=, session= optional)"
)
_MAPPING_FIX = f"fix the column mapping: {_COLUMNS_HINT}"


def _bare(name: str) -> str:
    """A header name without RecBole's type tag, lower-cased, for matching."""
    return name.split(":", 1)[0].strip().lower()


def parse_mapping(value: object, option: str) -> dict[str, str]:
    """ "a=x,b=y" (or a dict) as a dict; a clear ConfigError for anything else."""
    if isinstance(value, dict):
        return {str(k).strip(): str(v).strip() for k, v in value.items()}
    out = {}
    for part in str(value).split(","):
        if not part.strip():
            continue
        key, eq, val = part.partition("=")
        if not eq or not key.strip() or not val.strip():
            raise ConfigError(
                f"{part.strip()!r} is not KEY=VALUE", option=option, hint=f"write {option}=a=x,b=y"
            )
        out[key.strip()] = val.strip()
    return out


def detect_time_unit(values: pl.Series, column: str) -> str:
    """s / ms / us / order from the magnitude of numbers, iso for date text."""
    values = values.drop_nulls().cast(pl.String).str.strip_chars()
    if values.is_empty():
        raise ConfigError(
            f"column {column!r} has no values to tell its time unit from",
            option="time_unit",
            hint="pass time_unit=s|ms|us|iso|order",
        )
    numbers = values.cast(pl.Float64, strict=False).drop_nulls()
    # The majority decides; an odd bad value is then reported with its line when read.
    if len(numbers) > 0.5 * len(values):
        low, high = numbers.min(), numbers.max()
        integers = (numbers == numbers.floor()).all()
        if integers and high < 1e8:
            return "order"
        for unit, (lo, hi) in {"s": (1e8, 1e11), "ms": (1e11, 1e14), "us": (1e14, 1e17)}.items():
            if lo <= low and high < hi:
                return unit
        raise ConfigError(
            f"cannot tell the time unit of column {column!r} from values {low:g} to {high:g}",
            option="time_unit",
            hint="pass time_unit=s|ms|us|iso|order",
        )
    parsed = values.str.to_datetime(time_unit="ms", time_zone="UTC", strict=False)
    if parsed.null_count() < 0.5 * len(values):
        return "iso"
    raise ConfigError(
        f"cannot read column {column!r} as time: values like {values[0]!r}",
        option="time_unit",
        hint="pass time_unit=s|ms|us|iso|order (and time_format= for unusual date text), "
        "or map another column with columns=time=...",
    )


@dataclass
class _Plan:
    path: Path
    format: str
    source: Source
    roles: dict[str, str] = field(default_factory=dict)  # role -> column in the file
    time_unit: str | None = None
    time_dtype: pl.DataType | None = None  # stored type of a Parquet time column


@register_dataset
@dataclass
class CustomAdapter(SourceAdapter):
    name = "custom"
    description = "your own log: CSV / TSV / Parquet with a column mapping, .inter, or sequences"
    files = ()
    homepage = "https://github.com/RUCAIBox/RecBole (atomic files) or your own export"
    default_protocol = "user-time"
    option_help: ClassVar[dict[str, str]] = {
        "path": "the file (default: the only data file in the folder)",
        "format": "csv | tsv | parquet | inter | sequences",
        "columns": "user=COL,item=COL,time=COL[,behavior=COL,category=COL,session=COL]",
        "separator": "CSV field separator (default: sniffed)",
        "time_unit": "s | ms | us | iso | order (default: detected)",
        "time_format": "strftime format of text times",
        "tz": "time zone of text times without an offset (default UTC)",
        "behaviors": "RAW=pv|fav|cart|buy,... extra behaviour names",
    }

    def __post_init__(self) -> None:
        # has_time and the default protocol depend on the options, so they are per instance.
        self._error: BenchError | None = None
        self._plan: _Plan | None = None
        try:
            self._plan = self._make_plan()
        except BenchError as err:  # raised again by scan() / sources(), where callers expect it
            self._error = err
            return
        self.has_time = self._plan.time_unit not in (None, "order")
        if not self.has_time:
            self.default_protocol = "user-loo"
        elif "session" in self._plan.roles and "user" not in self._plan.roles:
            self.default_protocol = "session-time"

    @property
    def plan(self) -> _Plan:
        if self._error is not None:
            raise self._error
        assert self._plan is not None
        return self._plan

    # ------------------------------------------------------------ resolving the options

    def _path(self) -> Path:
        given = self.option("path")
        if given is not None:
            path = Path(str(given)).expanduser()
            if not path.is_absolute() and (self.root / path).exists():
                path = self.root / path
            if not path.is_file():
                raise DataError(
                    "no such file",
                    file=path,
                    hint="check path= (absolute, or relative to the data folder)",
                )
            return path
        if self.root.is_file():
            return self.root
        if not self.root.is_dir():
            raise ConfigError(
                f"no data folder {self.root} for the custom data set",
                option="path",
                hint="pass path=YOUR_FILE, or --data-dir pointing at it",
            )
        found = sorted(p for p in self.root.iterdir() if p.suffix.lower() in _EXTENSIONS)
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "no data files"
            raise ConfigError(
                f"which file in {self.root}? ({names})", option="path", hint="pass path=FILE"
            )
        return found[0]

    def _format(self, path: Path) -> str:
        given = self.option("format")
        if given is not None:
            fmt = str(given).lower()
            if fmt not in FORMATS:
                raise ConfigError(
                    f"unknown format {given!r}",
                    option="format",
                    hint=f"use one of {', '.join(FORMATS)}",
                )
            return fmt
        fmt = _EXTENSIONS.get(path.suffix.lower(), "csv")
        if fmt == "csv" and self.option("columns") is None:
            with open(path, "rb") as fh:
                head = fh.read(1 << 16).decode("utf-8", errors="replace")
            first = next((line for line in head.splitlines() if line.strip()), "")
            tokens = [t for t in re.split(r"[,\s]+", first) if t]
            if tokens and all(_INTEGER.match(t) for t in tokens):
                return "sequences"
        return fmt

    def _separator(self, fmt: str, first: str) -> str:
        given = self.option("separator")
        if given is not None:
            return _SEPARATORS.get(str(given).lower(), str(given))
        if fmt in ("tsv", "inter"):
            return "\t"
        return guess_separator(first) or ","

    def _roles(self, path: Path, names: list[str], first: str, sep: str) -> dict[str, str]:
        bare = {_bare(n): n for n in names}
        given = self.option("columns")
        if given is not None:
            roles = parse_mapping(given, "columns")
            for role in roles:
                if role not in ROLES:
                    raise ConfigError(
                        f"unknown role {role!r} in the column mapping",
                        option="columns",
                        hint=f"roles are {', '.join(ROLES)}",
                    )
            # A mapped name may omit RecBole's type tag; unknown names stay and fail later
            # with the file's header in the message.
            roles = {r: c if c in names else bare.get(_bare(c), c) for r, c in roles.items()}
        else:
            roles = {}
            for role, aliases in ALIASES.items():
                hit = next((bare[a] for a in aliases if a in bare), None)
                if hit is not None:
                    roles[role] = hit
            if "item" not in roles:
                other = guess_separator(first)
                if len(names) == 1 and other is not None and other != sep:
                    raise DataError(
                        f"the file looks {other!r}-separated, not {sep!r}-separated",
                        file=path,
                        line=1,
                        hint=f"pass separator={other!r}",
                    )
                raise ConfigError(
                    f"cannot tell which column holds the item (header: {', '.join(names)})",
                    option="columns",
                    hint=_COLUMNS_HINT,
                )
        if "item" not in roles or not ({"user", "session"} & set(roles)):
            raise ConfigError(
                "the column mapping needs item and one of user / session",
                option="columns",
                hint=_COLUMNS_HINT,
            )
        return roles

    def _behaviors(self) -> dict[str, str]:
        mapping = dict(SYNONYMS)
        given = self.option("behaviors")
        if given is not None:
            for raw, target in parse_mapping(given, "behaviors").items():
                if target not in BEHAVIORS:
                    raise ConfigError(
                        f"{target!r} is not a behaviour",
                        option="behaviors",
                        hint=f"map values onto {', '.join(BEHAVIORS)}",
                    )
                mapping[raw.strip().lower()] = target
        return mapping

    def _time_unit(self) -> str | None:
        given = self.option("time_unit")
        if given is None:
            return None
        unit = str(given).lower()
        if unit not in UNITS:
            raise ConfigError(
                f"unknown time unit {given!r}",
                option="time_unit",
                hint=f"use one of {', '.join(UNITS)}",
            )
        return unit

    def _make_plan(self) -> _Plan:
        self.check_options()
        path = self._path()
        fmt = self._format(path)
        if fmt == "sequences":
            sep = self.option("separator")
            sep = None if sep is None else _SEPARATORS.get(str(sep).lower(), str(sep))
            return _Plan(path, fmt, SequenceFile(path, separator=sep), time_unit="order")
        unit = self._time_unit()
        if fmt == "parquet":
            ParquetFile(path, ()).check()  # readable, not empty
            schema = pl.read_parquet_schema(path)
            names = list(schema)
            roles = self._roles(path, names, "", "")
            time_dtype = None
            if "time" in roles and roles["time"] in names:
                time_dtype = schema[roles["time"]]
                if time_dtype.is_temporal():
                    unit = "datetime"
                elif unit is None:
                    sample = pl.scan_parquet(path).select(roles["time"]).head(1000).collect()
                    unit = detect_time_unit(sample.to_series(), roles["time"])
            source = ParquetFile(path, self._fields(roles, unit), column_fix=_MAPPING_FIX)
            return _Plan(path, fmt, source, roles, unit, time_dtype)
        with open(path, "rb") as fh:
            head = fh.read(1 << 16).decode("utf-8", errors="replace").lstrip("\ufeff")
        lines = head.splitlines()
        first = lines[0] if lines else ""
        sep = self._separator(fmt, first)
        names = [c.strip() for c in (first.split(sep) if sep != " " else first.split())]
        if first.strip() and all(_INTEGER.match(c) or not c for c in names):
            raise DataError(
                f"line 1 looks like data, not a header: {first[:60]!r}",
                file=path,
                line=1,
                hint="add a header line naming the columns (e.g. user,item,time), or pass "
                "format=sequences for one sequence of item ids per line",
            )
        roles = self._roles(path, names, first, sep)
        quote = None if fmt in ("tsv", "inter") else '"'
        if "time" in roles and unit is None and roles["time"] in names:
            try:
                sample = (
                    pl.scan_csv(
                        path,
                        separator=sep,
                        quote_char=quote,
                        infer_schema=False,
                        truncate_ragged_lines=True,
                        encoding="utf8-lossy",
                    )
                    .select(roles["time"])
                    .head(1000)
                    .collect()
                )
            except pl.exceptions.PolarsError as err:
                raise DataError(
                    f"cannot read the first rows ({str(err).splitlines()[0]})",
                    file=path,
                    hint="check the separator and the header line",
                ) from err
            unit = detect_time_unit(sample.to_series(), roles["time"])
        source = CsvFile(
            path,
            self._fields(roles, unit),
            separator=sep,
            quote_char=quote,
            what="a table with a header naming the mapped columns",
            separator_option="separator",
            column_fix=_MAPPING_FIX,
        )
        return _Plan(path, fmt, source, roles, unit)

    # ------------------------------------------------------------ fields and expressions

    def _fields(self, roles: dict[str, str], unit: str | None) -> tuple[Field, ...]:
        keys = list(self._behaviors())
        fields = []
        for role in ROLES:
            if role not in roles:
                continue
            if role == "time":
                spec = Field(
                    roles[role],
                    valid=self._time_valid(unit),
                    expect=f"a time ({unit})",
                    fix="fix or delete the line, or pass time_unit= / time_format= to match it",
                )
            elif role == "behavior":
                spec = Field(
                    roles[role],
                    valid=lambda raw: _norm(raw).is_in(keys),
                    expect="a known behaviour (pv, fav, cart, buy or a synonym)",
                    fix="map the value with behaviors='VALUE=pv' (targets: pv, fav, cart, buy)",
                )
            else:
                # An id is required unless another column can carry the sequence.
                keys_present = {"user", "session"} & set(roles)
                required = role == "item" or (role in keys_present and len(keys_present) == 1)
                spec = Field(
                    roles[role],
                    required=required,
                    expect="an id",
                    fix="fill in the id or delete the line",
                )
            fields.append(spec)
        # One column may serve two roles (e.g. user and session): read it once.
        merged: dict[str, Field] = {}
        for f in fields:
            if f.name in merged:
                f = replace(merged[f.name], required=merged[f.name].required or f.required)
            merged[f.name] = f
        return tuple(merged.values())

    def _time_valid(self, unit: str | None):
        if unit in _SCALE:
            return lambda raw: raw.cast(pl.Float64, strict=False).is_not_null()
        if unit == "order":
            return lambda raw: raw.cast(pl.Int64, strict=False).is_not_null()
        if unit == "iso":
            fmt, tz = self.option("time_format"), str(self.option("tz", "UTC"))
            return lambda raw: raw.str.to_datetime(
                format=fmt, time_unit="ms", time_zone=tz, strict=False
            ).is_not_null()
        return None

    def _ts(self, col: str, unit: str | None, dtype: pl.DataType | None) -> pl.Expr:
        raw = pl.col(col)
        tz = str(self.option("tz", "UTC"))
        if unit == "datetime":
            assert dtype is not None
            ts = raw.cast(pl.Datetime("ms")) if dtype == pl.Date else raw.dt.cast_time_unit("ms")
            zone = getattr(dtype, "time_zone", None)
            ts = ts.dt.replace_time_zone(tz) if zone is None else ts
            return ts.dt.convert_time_zone("UTC").cast(TIMESTAMP)
        if unit in _SCALE:
            return (raw.cast(pl.Float64) * _SCALE[unit]).round().cast(pl.Int64).cast(TIMESTAMP)
        if unit == "order":
            return ms_to_ts(raw.cast(pl.Int64))
        fmt = self.option("time_format")
        parsed = raw.str.to_datetime(format=fmt, time_unit="ms", time_zone=tz)
        return parsed.dt.convert_time_zone("UTC").cast(TIMESTAMP)

    # ------------------------------------------------------------ the adapter contract

    def sources(self) -> list[Source]:
        return [self.plan.source]

    def scan(self) -> pl.LazyFrame:
        plan = self.plan
        if plan.format == "sequences":
            return sequences_canonical(plan.source.scan())
        lf = plan.source.scan().with_row_index("__order")
        roles = plan.roles
        if "time" in roles:
            ts = self._ts(roles["time"], plan.time_unit, plan.time_dtype)
        else:
            ts = ms_to_ts(pl.col("__order"))
        behavior = "pv"
        if "behavior" in roles:
            behavior = _norm(pl.col(roles["behavior"])).replace_strict(
                self._behaviors(), return_dtype=Behavior
            )
        ids = {
            r: pl.col(c) for r, c in roles.items() if r in ("user", "session", "item", "category")
        }
        return canonical(
            lf,
            user=ids.get("user"),
            session=ids.get("session"),
            item=ids["item"],
            category=ids.get("category"),
            behavior=behavior,
            ts=ts,
            id_dtype=pl.String,
        )


def _norm(raw: pl.Expr) -> pl.Expr:
    return raw.cast(pl.String).str.strip_chars().str.to_lowercase()
