"""Your own interaction log, which is what most users bring.

Reads CSV / TSV / Parquet tables with a column mapping, RecBole atomic `.inter` files,
and one-sequence-per-line text files as session-based papers publish them. Options
(`get_adapter("custom", data_dir, **options)`, or `--option key=value` on the CLI):

- `path`: the file, absolute or relative to the data folder; default: the only data
  file in the folder (or the folder itself when it names a file).
- `format`: csv | tsv | parquet | inter | sequences; default from the extension. A .csv /
  .txt file whose first line is all integers is data, not a header: it is read as a
  header-less table when every line has the same 2 to 4 fields and the first field (the
  user) repeats on consecutive lines (`user item` files as SASRec published them),
  else as one sequence per line.
- `header`: true | false; default: detected (a first line of numbers is data). Columns of
  a header-less table are named by position: `columns=user=1,item=2,time=3`; without a
  mapping, 2 columns are user, item and 3 are user, item, time.
- `columns`: "user=COL,item=COL,time=COL[,behavior=COL,category=COL,session=COL]" (or a
  dict); default: recognised header names (user_id, userId, item_id, movieId, timestamp,
  session_id, ...; RecBole's ":token" tags are ignored). `item` and one of `user` /
  `session` are required; without `time` the file order is the order.
- `separator`: the field separator of a CSV (default: sniffed from the header line).
- `time_unit`: s | ms | us | iso | order; default: detected from the first 1,000 values
  (numbers of 1e8-1e11 are seconds, 1e11-1e14 ms, 1e14-1e17 us, small integers an order
  index; text parsed as ISO-8601) and then held to on every value: a detected unit
  that some value disagrees with (a seconds value in a milliseconds file) is an error
  naming the line of the first value against the column's majority. `order` (or no time
  column) means no clock time. A time column that holds ids while another column holds
  Unix times is taken for a swapped mapping and refused, with the likely one.
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
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import polars as pl

from bench.datasets.adapters.base import Source, SourceAdapter
from bench.datasets.io.csv import CsvFile
from bench.datasets.io.fields import Field
from bench.datasets.io.parquet import ParquetFile
from bench.datasets.io.sequences import SequenceFile, sequences_canonical
from bench.datasets.io.text import guess_separator, refuse_compressed
from bench.datasets.registry import register_dataset
from bench.datasets.schema import BEHAVIORS, TIMESTAMP, Behavior, canonical, ms_to_ts
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
_BANDS = {"s": (1e8, 1e11), "ms": (1e11, 1e14), "us": (1e14, 1e17)}
_UNIT_NAMES = {
    "s": "Unix seconds",
    "ms": "Unix milliseconds",
    "us": "Unix microseconds",
    "small": "small numbers (ids or positions, not Unix times)",
    "huge": "numbers too large for Unix times",
}
# Unix seconds that look like real event times: 1990-01-01 to 2100-01-01
_PLAUSIBLE_SECONDS = (631_152_000, 4_102_444_800)
INTER_TAGS = ("token", "float", "token_seq", "float_seq")
SAMPLE_ROWS = 1000
TABLE_SHARE = 0.95  # of the head's lines with one field count, for a header-less table
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
_SEPARATOR_WORDS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
_SEPARATORS = {"comma": ",", "tab": "\t", "\\t": "\t", "semicolon": ";", "pipe": "|", "space": " "}
_INTEGER = re.compile(r"^\s*-?\d+\s*$")
_NUMBER = re.compile(r"^\s*-?\d+(\.\d*)?([eE][-+]?\d+)?\s*$")
_FIELDS = re.compile(r"[,;\t ]+")
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


def magnitude(x: pl.Expr) -> pl.Expr:
    """The unit a number's size suggests: small (an order index or an id), s, ms, us, huge."""
    out = pl.when(x < 1e8).then(pl.lit("small"))
    for unit, (_, high) in _BANDS.items():
        out = out.when(x < high).then(pl.lit(unit))
    return out.otherwise(pl.lit("huge"))


def in_band(x: pl.Expr, unit: str) -> pl.Expr:
    low, high = _BANDS[unit]
    return (x >= low) & (x < high)


def detect_time_unit(values: pl.Series, column: str) -> str:
    """s / ms / us / order from the magnitude of numbers, iso for date text.

    The sample's majority decides; every value is then held to that unit when read (see
    `CustomAdapter.diagnose` for the report of a column that mixes units).
    """
    values = values.drop_nulls().cast(pl.String).str.strip_chars()
    if values.is_empty():
        raise ConfigError(
            f"column {column!r} has no values to tell its time unit from",
            option="time_unit",
            hint="pass time_unit=s|ms|us|iso|order",
        )
    numbers = values.cast(pl.Float64, strict=False).drop_nulls()
    if len(numbers) > 0.5 * len(values):
        integers = (numbers == numbers.floor()).all()
        if integers and numbers.max() < 1e8:
            return "order"
        bands = numbers.to_frame("x").select(magnitude(pl.col("x")).alias("unit"))
        unit = bands["unit"].value_counts(sort=True)["unit"][0]
        if unit in _BANDS:
            return unit
        raise ConfigError(
            f"cannot tell the time unit of column {column!r}: most values are "
            f"{_UNIT_NAMES[unit]} ({numbers.min():g} to {numbers.max():g})",
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


def plausible_unix_unit(values: pl.Series) -> str | None:
    """s / ms / us when every value is a Unix time of that unit between 1990 and 2100."""
    numbers = values.drop_nulls().cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    if numbers.is_empty() or numbers.null_count():
        return None
    for unit, scale in _SCALE.items():
        seconds = numbers * (scale / 1000)
        low, high = _PLAUSIBLE_SECONDS
        if seconds.min() >= low and seconds.max() < high:  # type: ignore[operator]
            return unit
    return None


def _describe_values(values: pl.Series) -> str:
    numbers = values.drop_nulls().cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    if numbers.is_empty() or numbers.null_count():
        return "text that is not a time"
    unit = numbers.to_frame("x").select(magnitude(pl.col("x")))[:, 0].value_counts(sort=True)
    return _UNIT_NAMES[unit[:, 0][0]]


def check_mapping(sample: pl.DataFrame, roles: dict[str, str], time_ok: bool) -> None:
    """Refuse a mapping whose time column holds no plausible time while another column
    holds nothing but Unix times (`user=uid,item=ts,time=sku`), showing the likely one."""
    if time_ok or "time" not in roles or roles["time"] not in sample.columns:
        return
    time_col = roles["time"]
    for name in sample.columns:
        if name == time_col:
            continue
        unit = plausible_unix_unit(sample[name])
        if unit is None:
            continue
        role = next((r for r, c in roles.items() if c == name), None)
        fixed = dict(roles)
        fixed["time"] = name
        if role is not None:
            fixed[role] = time_col
        mapping = ",".join(f"{r}={fixed[r]}" for r in ROLES if r in fixed)
        held = f" (mapped to {role})" if role else ""
        raise ConfigError(
            f"column {time_col!r}, mapped to time, holds "
            f"{_describe_values(sample[time_col])}, while column {name!r}{held} holds "
            f"{_UNIT_NAMES[unit]} (e.g. {sample[name].drop_nulls()[0]!r}): the mapping "
            "looks swapped",
            option="--columns",
            hint=f"--columns {mapping} (or time_unit=order if {time_col!r} really is the "
            "order of the events)",
        )


def check_inter_header(path: Path, first: str, sep: str) -> None:
    """A RecBole atomic file: tab-separated `name:tag` columns with a known tag."""
    if sep == "\t" and "\t" not in first and first.count(",") >= 1:
        cells = first.split(",")
        if all(":" in c for c in cells):
            raise DataError(
                "the file is comma-separated, but RecBole .inter files are tab-separated",
                file=path,
                line=1,
                hint=f"replace the commas by tabs (tr ',' '\\t' < {path.name} > fixed.inter), "
                "or pass separator=',' to read it as it is",
            )
    for cell in first.split(sep):
        name, colon, tag = cell.strip().partition(":")
        if colon and tag not in INTER_TAGS:
            raise DataError(
                f"column {cell.strip()!r} has the type tag {tag!r}, which RecBole does not know",
                file=path,
                line=1,
                column=cell.strip(),
                hint=f"write it as {name}:TAG with TAG one of {', '.join(INTER_TAGS)} "
                f"(e.g. {name}:token for ids, {name}:float for times)",
            )


def looks_like_table(lines: list[str]) -> bool:
    """Numeric lines that are a header-less table, not sequences: nearly every line (an odd
    one is an error to report, not a reason to misread the file) has the same 2 to 4
    fields, and the first field repeats on consecutive lines (a user's events)."""
    rows = [_FIELDS.split(line.strip()) for line in lines if line.strip()]
    if len(rows) < 2:
        return False
    width, count = Counter(len(r) for r in rows).most_common(1)[0]
    if not 2 <= width <= 4 or count < TABLE_SHARE * len(rows):
        return False
    return any(a[0] == b[0] for a, b in zip(rows, rows[1:], strict=False))


@dataclass
class _Plan:
    path: Path
    format: str
    source: Source
    roles: dict[str, str] = field(default_factory=dict)  # role -> column in the file
    time_unit: str | None = None
    time_dtype: pl.DataType | None = None  # stored type of a Parquet time column
    detected: bool = False  # the unit was detected, so every value is held to it
    reading: str = ""  # how the file was taken, for messages about its shape


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
        "header": "true | false: whether line 1 names the columns (default: detected)",
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
    def reading(self) -> str:
        """How the file was taken (format, header, columns), for messages about its shape."""
        return self._plan.reading if self._plan is not None else ""

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
            if path.is_dir():
                raise DataError(
                    "this is a folder; path= must name the data file",
                    file=path,
                    hint="pass path=FOLDER/FILE, or --data-dir FOLDER with path=FILE",
                )
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

    def _format(self, path: Path, lines: list[str]) -> str:
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
        explicit_table = self.option("columns") is not None or self.option("header") is not None
        if fmt == "csv" and not explicit_table:
            first = next((line for line in lines if line.strip()), "")
            tokens = [t for t in _FIELDS.split(first) if t]
            if tokens and all(_INTEGER.match(t) for t in tokens) and not looks_like_table(lines):
                return "sequences"
        return fmt

    def _separator(self, fmt: str, first: str) -> str:
        given = self.option("separator")
        if given is not None:
            return _SEPARATORS.get(str(given).lower(), str(given))
        if fmt in ("tsv", "inter"):
            return "\t"
        found = guess_separator(first)
        if found is None and len(first.split()) > 1:
            return " "
        return found or ","

    def _header(self, first: str, sep: str) -> bool:
        """Whether line 1 names the columns: as given, else not when it is all numbers."""
        if self.option("header") is not None:
            return self.flag("header", True)
        cells = [c for c in (first.split(sep) if sep != " " else first.split()) if c.strip()]
        return not (cells and all(_NUMBER.match(c) for c in cells))

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
        with open(path, "rb") as fh:
            raw_head = fh.read(1 << 16)
        refuse_compressed(path, raw_head)
        lines = raw_head.decode("utf-8", errors="replace").lstrip("\ufeff").splitlines()
        if len(raw_head) == 1 << 16 and len(lines) > 1:
            lines = lines[:-1]  # the last line of the head may be cut short
        fmt = self._format(path, lines)
        if fmt == "sequences":
            sep = self.option("separator")
            sep = None if sep is None else _SEPARATORS.get(str(sep).lower(), str(sep))
            reading = "one sequence of item ids per line (no header; format=sequences)"
            source = SequenceFile(path, separator=sep)
            return _Plan(path, fmt, source, time_unit="order", reading=reading)
        if fmt == "parquet":
            return self._parquet_plan(path)
        first = lines[0] if lines else ""
        sep = self._separator(fmt, first)
        if fmt == "inter":
            check_inter_header(path, first, sep)
        header = fmt == "inter" or self._header(first, sep)
        cells = [c.strip() for c in (first.split(sep) if sep != " " else first.split())]
        if header:
            names = cells
            roles = self._roles(path, names, first, sep)
        else:
            names = [str(k) for k in range(1, len(cells) + 1)]
            roles = self._headerless_roles(path, names, first)
        quote = None if fmt in ("tsv", "inter") else '"'
        unit, detected = self._time_unit(), False
        sample = None
        if unit is None and "time" in roles and roles["time"] in names:
            sample = self._csv_sample(path, sep, quote, header, names)
            unit, detected = self._detect(sample, roles), True
        reading = self._describe(fmt, sep, header, roles, unit)
        source = CsvFile(
            path,
            self._fields(roles, unit, detected, names if not header else None),
            separator=sep,
            header=header,
            quote_char=quote,
            what="a table with a header naming the mapped columns",
            separator_option="separator",
            column_fix=_MAPPING_FIX,
            read_as=reading,
        )
        return _Plan(path, fmt, source, roles, unit, None, detected, reading)

    def _parquet_plan(self, path: Path) -> _Plan:
        ParquetFile(path, ()).check()  # readable, not empty
        schema = pl.read_parquet_schema(path)
        names = list(schema)
        roles = self._roles(path, names, "", "")
        unit, detected, time_dtype = self._time_unit(), False, None
        if "time" in roles and roles["time"] in names:
            time_dtype = schema[roles["time"]]
            if time_dtype.is_temporal():
                unit = "datetime"
            elif unit is None:
                sample = pl.scan_parquet(path).head(SAMPLE_ROWS).collect()
                sample = sample.select(pl.all().cast(pl.String, strict=False))
                unit, detected = self._detect(sample, roles), True
        fields = self._fields(roles, unit, detected, None)
        source = ParquetFile(path, fields, column_fix=_MAPPING_FIX)
        reading = self._describe("parquet", "", True, roles, unit)
        return _Plan(path, "parquet", source, roles, unit, time_dtype, detected, reading)

    def _headerless_roles(self, path: Path, names: list[str], first: str) -> dict[str, str]:
        """Roles of a table without header: by position, from columns= or the field count."""
        if self.option("columns") is not None:
            roles = parse_mapping(self.option("columns"), "columns")
            if all(c in names for c in roles.values()):
                return self._roles(path, names, first, "")
            raise DataError(
                f"line 1 looks like data, not a header: {first[:60]!r}",
                file=path,
                line=1,
                hint="map the columns by position with header=false "
                f"(columns=user=1,item=2,time=3 for columns 1..{len(names)}), or add a "
                "header line naming the columns (e.g. user,item,time)",
            )
        positional = {2: ("user", "item"), 3: ("user", "item", "time")}.get(len(names))
        if positional is None:
            raise ConfigError(
                f"the file has no header and {len(names)} columns: which is the user, the "
                "item and the time?",
                option="columns",
                hint="map them by position, e.g. columns=user=1,item=2,time=4",
            )
        return dict(zip(positional, names, strict=False))

    def _csv_sample(
        self, path: Path, sep: str, quote: str | None, header: bool, names: list[str]
    ) -> pl.DataFrame:
        """The first rows, every column as text (to detect the time unit and check roles)."""
        try:
            return (
                pl.scan_csv(
                    path,
                    separator=sep,
                    has_header=header,
                    new_columns=None if header else names,
                    quote_char=quote,
                    infer_schema=False,
                    truncate_ragged_lines=True,
                    encoding="utf8-lossy",
                )
                .head(SAMPLE_ROWS)
                .collect()
            )
        except pl.exceptions.PolarsError as err:
            raise DataError(
                f"cannot read the first rows ({str(err).splitlines()[0]})",
                file=path,
                hint="check the separator and the header line",
            ) from err

    def _detect(self, sample: pl.DataFrame, roles: dict[str, str]) -> str:
        """The time unit from the sample, after checking that the mapping is not swapped."""
        column = roles["time"]
        try:
            unit = detect_time_unit(sample[column], column)
        except ConfigError:
            check_mapping(sample, roles, time_ok=False)  # a swapped mapping explains it better
            raise
        plausible = unit == "iso" or plausible_unix_unit(sample[column]) is not None
        check_mapping(sample, roles, time_ok=plausible)
        return unit

    def _describe(
        self, fmt: str, sep: str, header: bool, roles: dict[str, str], unit: str | None
    ) -> str:
        """How the file was taken, e.g. "a whitespace-separated table without header,
        columns 1..2 = user, item"."""
        if fmt == "parquet":
            kind = "a Parquet table"
        else:
            name = "whitespace" if sep == " " else _SEPARATOR_WORDS.get(sep, repr(sep))
            kind = f"a {name}-separated table {'with a header' if header else 'without header'}"
        if header:
            cols = ", ".join(f"{c} = {r}" for r, c in roles.items())
        else:
            ordered = sorted(roles.items(), key=lambda rc: int(rc[1]))
            positions = [c for _, c in ordered]
            if positions == [str(k) for k in range(1, len(positions) + 1)]:
                cols = f"columns 1..{len(positions)} = {', '.join(r for r, _ in ordered)}"
            else:
                cols = ", ".join(f"column {c} = {r}" for r, c in ordered)
        if "time" not in roles:
            return f"{kind}, {cols}, no time column (the file order is the order)"
        return f"{kind}, {cols}" + (f", time in {unit}" if unit not in (None, "datetime") else "")

    # ------------------------------------------------------------ fields and expressions

    def _fields(
        self,
        roles: dict[str, str],
        unit: str | None,
        detected: bool,
        positions: list[str] | None,
    ) -> tuple[Field, ...]:
        """The fields to read; `positions` (a table without header) lists every column, in
        order, as the reader matches fields by position there."""
        keys = list(self._behaviors())
        fields = []
        for role in ROLES:
            if role not in roles:
                continue
            if role == "time":
                expect = f"a time ({unit})"
                if detected and unit in _BANDS:
                    expect = (
                        f"a time in {_UNIT_NAMES[unit]} like the first values of the column "
                        f"({_BANDS[unit][0]:.0e} to {_BANDS[unit][1]:.0e})"
                    )
                spec = Field(
                    roles[role],
                    valid=self._time_valid(unit, detected),
                    expect=expect,
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
        if positions is not None:
            return tuple(merged.get(n, Field(n, required=False)) for n in positions)
        return tuple(merged.values())

    def _time_valid(self, unit: str | None, detected: bool):
        if unit in _SCALE:
            if detected:  # held to the unit of the first values
                return lambda raw: in_band(raw.cast(pl.Float64, strict=False), unit).fill_null(
                    False
                )
            return lambda raw: raw.cast(pl.Float64, strict=False).is_not_null()
        if unit == "order":
            return lambda raw: raw.cast(pl.Int64, strict=False).is_not_null()
        if unit == "iso":
            fmt, tz = self.option("time_format"), str(self.option("tz", "UTC"))
            return lambda raw: raw.str.to_datetime(
                format=fmt, time_unit="ms", time_zone=tz, strict=False
            ).is_not_null()
        return None

    def _ts(self, col: str, plan: _Plan) -> pl.Expr:
        raw = pl.col(col)
        unit, dtype = plan.time_unit, plan.time_dtype
        tz = str(self.option("tz", "UTC"))
        if unit == "datetime":
            assert dtype is not None
            ts = raw.cast(pl.Datetime("ms")) if dtype == pl.Date else raw.dt.cast_time_unit("ms")
            zone = getattr(dtype, "time_zone", None)
            ts = ts.dt.replace_time_zone(tz) if zone is None else ts
            return ts.dt.convert_time_zone("UTC").cast(TIMESTAMP)
        if unit in _SCALE:
            value = raw.cast(pl.Float64)
            if plan.detected:
                # A value of another magnitude becomes NaN, whose strict cast below fails:
                # the caller's `checked` then runs `diagnose`, which names its line.
                ok = value.is_null() | in_band(value, unit)
                value = pl.when(ok).then(value).otherwise(float("nan"))
            return (value * _SCALE[unit]).round().cast(pl.Int64).cast(TIMESTAMP)
        if unit == "order":
            return ms_to_ts(raw.cast(pl.Int64))
        fmt = self.option("time_format")
        parsed = raw.str.to_datetime(format=fmt, time_unit="ms", time_zone=tz)
        return parsed.dt.convert_time_zone("UTC").cast(TIMESTAMP)

    def diagnose(self) -> DataError | None:
        """A column that mixes time units first (against the majority of all its values),
        then the readers' first bad line."""
        try:
            plan = self.plan
        except DataError as err:
            return err
        except BenchError:
            return None
        if plan.detected and plan.time_unit in _BANDS:
            found = self._mixed_units(plan)
            if found is not None:
                return found
        return super().diagnose()

    def _mixed_units(self, plan: _Plan) -> DataError | None:
        """The first time value whose magnitude disagrees with most values of its column."""
        column = plan.roles["time"]
        try:
            raw = plan.source.raw_table()
        except DataError as err:
            return err
        value = pl.col(column).str.strip_chars()
        number = value.cast(pl.Float64, strict=False)
        bands = (
            raw.filter(number.is_not_null())
            .group_by(magnitude(number).alias("unit"))
            .agg(
                pl.len().alias("n"),
                pl.col("__line").min().alias("line"),
                value.sort_by("__line").first().alias("value"),
            )
            .sort("n", "line", descending=[True, False])
            .collect(engine="streaming")
        )
        if bands.height < 2:
            return None
        majority, total = bands.row(0, named=True), int(bands["n"].sum())
        first = bands.slice(1).sort("line").row(0, named=True)
        where = "line" if isinstance(plan.source, CsvFile) else "row"
        return DataError(
            f"{first['value']!r} looks like {_UNIT_NAMES[first['unit']]}, but "
            f"{majority['n']:,} of the column's {total:,} times are "
            f"{_UNIT_NAMES[majority['unit']]} (the first at {where} {majority['line']}): "
            "the column mixes time units",
            file=plan.path,
            line=first["line"],
            column=column,
            hint="write every time in one unit (seconds x 1000 = milliseconds), or fix or "
            f"delete {where} {first['line']}",
        )

    # ------------------------------------------------------------ the adapter contract

    def sources(self) -> list[Source]:
        return [self.plan.source]

    def scan(self) -> pl.LazyFrame:
        plan = self.plan
        if plan.format == "sequences":
            return sequences_canonical(plan.source.scan())
        lf = plan.source.scan().with_row_index("__order")
        roles = plan.roles
        ts = self._ts(roles["time"], plan) if "time" in roles else ms_to_ts(pl.col("__order"))
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
