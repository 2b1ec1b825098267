"""What every protocol shares: the base class, typed parameters, the recipe hash, and the
vectorised Polars steps the recipes are built from (loading, remapping, examples, counts).

A protocol turns the canonical LazyFrame of an adapter into a `Built`: the flat events
table and per-split example pointers of the artifact layout (`bench.datasets.artifact`).
Inside a recipe, time is Int64 milliseconds (`ts`) so that orderings are exact; the
artifact stores Unix seconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import polars as pl
import pydantic
from pydantic import BaseModel, ConfigDict, Field

from bench.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")
TRAIN, VALID, TEST = 0, 1, 2
NO_TARGET = len(SPLITS)  # target code of an event row that is no example's target
BUY = 4  # behaviour index of a purchase (schema.BEHAVIOR_INDEX["buy"])
MS_PER_DAY = 86_400_000


class Params(BaseModel):
    """Parameters every protocol takes; each protocol extends this with its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: Literal["any", "buy"] = "any"
    max_len: int = Field(50, ge=1, description="history events the DataModule keeps")
    sampled_negatives: int = Field(0, ge=0, description="frozen negatives per valid/test example")
    negatives_seed: int = 0


@dataclass(frozen=True)
class DataInfo:
    """What a recipe may know about the data set besides its rows.

    `adapter`, when given, is the adapter whose frame is read: collecting goes through its
    checked reader, so bad raw data surfaces as a DataError with file, line and column.
    `ready`, when given, takes (file stem, frame) for a final table of the `Built` that a
    recipe has before it ends (prepare writes it meanwhile); the same frame must still be
    in the `Built` it returns.
    """

    dataset: str
    has_time: bool = True
    synthetic: bool = False
    adapter: Any = field(default=None, compare=False, repr=False)
    ready: Callable[[str, pl.DataFrame], None] | None = field(
        default=None, compare=False, repr=False
    )


@dataclass
class Built:
    """A recipe's output, in the artifact layout (see `bench.datasets.artifact`)."""

    events: pl.DataFrame  # seq, item, behavior, category, ts (seconds), split
    examples: dict[str, pl.DataFrame]  # split -> pos, start (UInt64)
    items: pl.DataFrame  # item, raw_item, category, train_count
    categories: pl.DataFrame  # category, raw_category
    drops: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # protocol-specific meta
    negatives: dict[str, pl.DataFrame] = field(default_factory=dict)
    targets: np.ndarray | None = None  # per event row: its example's split (NO_TARGET: none)


class Protocol:
    """A named, versioned recipe. Subclasses set the class attributes and `build`."""

    name: ClassVar[str]
    version: ClassVar[int]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    needs_time: ClassVar[bool] = True  # refuses data whose line order stands in for time
    # Defaults that belong to the recipe for a given data set (below the adapter's own).
    dataset_defaults: ClassVar[dict[str, dict]] = {}

    def resolve(
        self,
        overrides: dict | None = None,
        *,
        dataset: str = "",
        adapter_defaults: dict | None = None,
    ) -> Params:
        """Class defaults < recipe's data-set defaults < adapter's defaults < `overrides`."""
        merged = {**self.dataset_defaults.get(dataset, {}), **(adapter_defaults or {})}
        merged.update(overrides or {})
        fields = self.Params.model_fields
        unknown = sorted(set(merged) - set(fields))
        if unknown:
            raise ConfigError(
                f"protocol {self.name!r} has no parameter(s) {', '.join(unknown)}",
                option="--set",
                hint=f"parameters of {self.name}: {self.describe_params()}",
            )
        try:
            return self.Params(**merged)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "?"
            raise ConfigError(
                f"protocol {self.name!r}, parameter {loc}={merged.get(loc)!r}: {err['msg']}",
                option=f"--param {loc}",
                hint=f"parameters of {self.name}: {self.describe_params()}",
            ) from None

    def describe_params(self) -> str:
        return ", ".join(f"{k}={f.default!r}" for k, f in self.Params.model_fields.items())

    def check_data(self, data: DataInfo) -> None:
        if self.needs_time and not data.has_time:
            fitting = ", ".join(n for n, c in list_protocols().items() if not c.needs_time)
            raise ConfigError(
                f"protocol {self.name!r} needs clock time, but data set {data.dataset!r} has "
                "none (its line order stands in for time)",
                option="--protocol",
                hint=f"use a protocol that works on ordered sequences: {fitting}",
            )

    def build(self, frame: pl.LazyFrame, params: Params, data: DataInfo) -> Built:
        raise NotImplementedError


_PROTOCOLS: dict[str, type[Protocol]] = {}


def register_protocol(cls: type[Protocol]) -> type[Protocol]:
    """Class decorator: make a protocol available under `cls.name`."""
    _PROTOCOLS[cls.name] = cls
    return cls


def list_protocols() -> dict[str, type[Protocol]]:
    from bench.datasets import protocols  # noqa: F401  (imports every protocol module)

    return dict(sorted(_PROTOCOLS.items()))


def get_protocol(name: str) -> Protocol:
    known = list_protocols()
    if name not in known:
        raise ConfigError(
            f"unknown protocol {name!r}",
            option="--protocol",
            hint=f"choose one of: {', '.join(known)}",
        )
    return known[name]()


def recipe_hash(
    protocol: Protocol, params: Params, dataset: str, adapter_options: dict | None = None
) -> str:
    """12 hex digits keying the artifact: everything that changes the recipe's output."""
    payload = {
        "protocol": protocol.name,
        "version": protocol.version,
        "params": params.model_dump(mode="json"),
        "dataset": dataset,
        "adapter_options": adapter_options or {},
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ---------------------------------------------------------------- loading


def collect(frame: pl.LazyFrame, data: DataInfo) -> pl.DataFrame:
    """Collect (streaming) through the adapter's checked reader: read errors -> DataError."""
    if data.adapter is None:
        return frame.collect(engine="streaming")
    from bench.datasets.readers import collect_checked

    return collect_checked(frame, data.adapter, engine="streaming")


def load_events(
    frame: pl.LazyFrame,
    data: DataInfo,
    *,
    sequence: Literal["user", "session"],
    with_row: bool = False,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """The canonical frame as compact recipe columns: key, item, category, behavior, ts.

    sequence "user": `key` is the raw user id; data without any user id falls back to its
    sessions; rows missing the key are dropped and counted. sequence "session": `key` is the
    session id (null where the data gives none) and `user` the user id, to cut sessions by
    inactivity. Rows missing the item are dropped and counted. `row` (file order) on request.
    """
    schema = frame.collect_schema()
    cols = [
        pl.col("user_id" if sequence == "user" else "session_id").alias("key"),
        pl.col("item_id").alias("item"),
        pl.col("category_id").alias("category"),
        (pl.col("behavior").to_physical() + 1).cast(pl.UInt8).alias("behavior"),
        pl.col("ts").dt.epoch("ms").alias("ts"),
    ]
    other = "session_id" if sequence == "user" else "user_id"
    if other in schema:
        cols.append(pl.col(other).alias("other"))
    if with_row:
        frame = frame.with_row_index("row")
        cols.insert(0, pl.col("row"))
    df = contiguous(collect(frame.select(cols), data))
    drops: dict[str, int] = {}
    if df.height == 0:
        raise DataError("the data set has no rows", hint="check that the raw files are not empty")
    if sequence == "user":
        if "other" in df.columns:
            if df["key"].null_count() == df.height and df["other"].null_count() < df.height:
                df = df.with_columns(key=pl.col("other"))  # no user ids at all: sessions
            df = df.drop("other")
        missing = df["key"].null_count()
        if missing == df.height:
            raise DataError(
                "no row has a user id (nor a session id)",
                column="user_id",
                hint="map a user column, or use a session protocol (session-time)",
            )
        count_drop(drops, "missing_user_id", missing)
        if missing:
            df = df.filter(pl.col("key").is_not_null())
    else:
        df = df.rename({"other": "user"}) if "other" in df.columns else df
        if "user" not in df.columns:
            df = df.with_columns(user=pl.lit(None, dtype=pl.UInt32))
        lost = df.select((pl.col("key").is_null() & pl.col("user").is_null()).sum()).item()
        if lost == df.height:
            raise DataError(
                "no row has a session id or a user id to cut sessions from",
                column="session_id",
                hint="map a session or a user column",
            )
        count_drop(drops, "missing_session_and_user_id", lost)
        if lost:
            df = df.filter(pl.col("key").is_not_null() | pl.col("user").is_not_null())
    missing = df["item"].null_count()
    count_drop(drops, "missing_item_id", missing)
    if missing:
        df = df.filter(pl.col("item").is_not_null())
    return df, drops


def contiguous(df: pl.DataFrame) -> pl.DataFrame:
    """Each column in one chunk (a streaming read yields hundreds), so that NumPy views are
    free; one column at a time, to add at most one column to the peak memory."""
    for name in df.columns:
        if df[name].n_chunks() > 1:
            df = df.with_columns(df[name].rechunk())
    return df


def drop_missing_time(df: pl.DataFrame, drops: dict[str, int]) -> pl.DataFrame:
    missing = df["ts"].null_count()
    if missing:
        drops["missing_ts"] = missing
        df = df.filter(pl.col("ts").is_not_null())
    return df


def count_drop(drops: dict[str, int], reason: str, rows: int) -> None:
    if rows:
        drops[reason] = drops.get(reason, 0) + int(rows)


# ---------------------------------------------------------------- time


def zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {tz!r}",
            option="--param tz",
            hint="use an IANA name such as UTC or Asia/Shanghai",
        ) from None


def parse_instant(text: str, tz: str, option: str) -> datetime:
    """ISO date or date-time; without an offset it is read in `tz`."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"cannot read {text!r} as a date or date-time",
            option=f"--param {option}",
            hint="write ISO 8601, e.g. 2017-11-25T00:00:00+08:00",
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone(tz))
    return value


def to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def day_after(ts_ms: int, tz: str) -> datetime:
    """Local midnight that ends the day (in `tz`) holding the instant `ts_ms`."""
    local = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(zone(tz))
    midnight = datetime(local.year, local.month, local.day, tzinfo=zone(tz))
    return shift_days(midnight, 1, tz)


def shift_days(moment: datetime, days: int, tz: str) -> datetime:
    """`moment` moved by `days` calendar days in `tz`, wall clock kept (DST-safe)."""
    local = moment.astimezone(zone(tz)).replace(tzinfo=None) + timedelta(days=days)
    return local.replace(tzinfo=zone(tz))


def iso(ms: int, tz: str) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone(tz)).isoformat()


# ---------------------------------------------------------------- remapping


def index_codes(values: pl.Series, keys: pl.Series) -> pl.Series:
    """For each value, 1 + its position in `keys` (UInt32); 0 where it is not a key or null.

    Non-negative integer ids of modest range use a dense lookup table (a gather, the fast
    path for 100M-row files); anything else a hash join.
    """
    n = len(values)
    if keys.len() == 0:
        return pl.Series(values.name, np.zeros(n, dtype=np.uint32))
    if values.dtype.is_integer() and keys.dtype.is_integer() and values.null_count() < n:
        lo = min(values.min(), keys.min())  # type: ignore[type-var]
        hi = max(values.max(), keys.max())  # type: ignore[type-var]
        if lo >= 0 and hi < 4 * (n + len(keys)) + 1_000_000:
            table = np.zeros(int(hi) + 1, dtype=np.uint32)
            table[keys.to_numpy()] = np.arange(1, len(keys) + 1, dtype=np.uint32)
            # a Polars gather takes UInt32 indices as they are (NumPy would widen them)
            found = pl.Series(values.name, table).gather(values.cast(pl.UInt32))
            return found.fill_null(0) if found.null_count() else found
    keyed = pl.DataFrame({"k": keys.cast(values.dtype)}).with_row_index("i", offset=1)
    out = values.to_frame("k").join(keyed, on="k", how="left", maintain_order="left")
    return out["i"].cast(pl.UInt32).fill_null(0).alias(values.name)


def index_lookup(values: pl.Series, keys: pl.Series) -> pl.Series:
    """For each value, 1 + its position in `keys` (UInt32), null where it is not a key."""
    found = index_codes(values, keys)
    return found.set(found == 0, None) if (found == 0).any() else found


def raw_text(series: pl.Series) -> pl.Series:
    return series.cast(pl.String)


def category_vocab(raw: pl.Series, mask: np.ndarray | None = None) -> pl.Series:
    """Sorted distinct non-null raw categories (of `mask` rows): index = position + 1,
    0 = unknown. Small non-negative ints use a presence count, anything else a hash."""
    if raw.dtype.is_integer() and raw.null_count() == 0:
        return support(raw, mask)["item"].sort().alias(raw.name)
    if mask is not None:
        raw = raw.filter(pl.Series(mask))
    return raw.drop_nulls().unique().sort()  # hash-based: categories are few


def category_index(values: pl.Series, vocab: pl.Series) -> pl.Series:
    return index_codes(values, vocab)


# Rows per NumPy chunk: bounds the temporary copies, and keeps them under glibc's mmap
# threshold so that the allocator reuses their pages instead of faulting in fresh ones.
CHUNK_ROWS = 1 << 20
SMALL_RANGE = 8  # value ranges counted by comparisons rather than bincount


def chunked_bincount(values: np.ndarray, size: int, mask: np.ndarray | None) -> np.ndarray:
    """np.bincount(values[mask], minlength=size), in chunks (bincount widens to int64).

    A few distinct codes are counted by comparisons (no widening at all); a large `size`
    gets chunks of several times its rows, as each chunk's bincount zeroes `size` counts.
    """
    if mask is None and size <= SMALL_RANGE and values.dtype.kind in "ui":
        out = np.zeros(size, dtype=np.int64)
        for lo in range(0, len(values), CHUNK_ROWS):  # small chunks: the masks reuse memory
            part = values[lo : lo + CHUNK_ROWS]
            out += [np.count_nonzero(part == v) for v in range(size)]
        return out
    out = np.zeros(size, dtype=np.int64)
    step = max(CHUNK_ROWS, 4 * size)
    for lo in range(0, len(values), step):
        part = values[lo : lo + step]
        if mask is not None:
            part = part[mask[lo : lo + step]]
        out += np.bincount(part, minlength=size)[:size]
    return out


def first_rows(values: np.ndarray, size: int, mask: np.ndarray | None) -> np.ndarray:
    """For each value in 0..size-1, the first row holding it (among `mask` rows), else -1.

    A chunked scatter-min of row numbers (ufunc.at, which is exact for repeated indices),
    in UInt32 while the rows fit: no sort, no hash, a few bytes of temporary per row.
    """
    n = len(values)
    dtype = np.uint32 if n < 2**32 - 1 else np.uint64
    first = np.full(size, n, dtype=dtype)
    for lo in range(0, n, CHUNK_ROWS):
        rows = np.arange(lo, min(n, lo + CHUNK_ROWS), dtype=dtype)
        part = values[lo : lo + CHUNK_ROWS]
        if mask is not None:
            keep = mask[lo : lo + CHUNK_ROWS]
            rows, part = rows[keep], part[keep]
        np.minimum.at(first, part, rows)
    out = first.astype(np.int64)
    out[first == n] = -1
    return out


def item_table(
    vocab: pl.Series,
    index: pl.Series,
    category: pl.Series,
    train: np.ndarray,
    categories: pl.Series,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """items.parquet and categories.parquet for the item vocabulary `vocab`.

    Per kept event row: `index` (1..len(vocab)), raw `category`, and `train` (a training
    row?). An item's `train_count` is its training rows; its category that of its first
    training row (its first row at all, for an item with none: user-loo's vocabulary).
    """
    size = len(vocab) + 1
    idx = index.fill_null(0).to_numpy()  # 0: not in the vocabulary; its slot is dropped
    counts = chunked_bincount(idx, size, train)[1:]
    first = first_rows(idx, size, train)
    if (first[1:] < 0).any():  # items without a training row: their first row at all
        anywhere = first_rows(idx, size, None)
        first = np.where(first < 0, anywhere, first)
    first = first[1:]
    seen = first >= 0
    raw_category = pl.Series("category", [None] * len(vocab), dtype=category.dtype)
    if seen.any():
        picked = category.gather(first[seen])
        raw_category = raw_category.scatter(np.flatnonzero(seen), picked)
    return items_frame(
        vocab, category_index(raw_category, categories), categories, pl.Series(counts)
    )


def items_frame(
    vocab: pl.Series, category: pl.Series, categories: pl.Series, train_count: pl.Series
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """items.parquet and categories.parquet from per-item columns aligned with `vocab`:
    the category index (0 = unknown) and the training support."""
    items = pl.DataFrame(
        {
            "item": pl.Series(np.arange(1, len(vocab) + 1, dtype=np.uint32)),
            "raw_item": raw_text(vocab),
            "category": category.cast(pl.UInt32),
            "train_count": train_count.cast(pl.UInt64),
        }
    )
    cats = pl.DataFrame(
        {
            "category": pl.Series(np.arange(1, len(categories) + 1, dtype=np.uint32)),
            "raw_category": raw_text(categories),
        }
    )
    return items, cats


# ---------------------------------------------------------------- events and examples


def sequence_index(keys: pl.Expr) -> pl.Expr:
    """0-based sequence number for rows already grouped by `keys` (a key change starts one)."""
    return (keys != keys.shift(1)).fill_null(True).cum_sum().cast(pl.UInt32) - 1


def _plain_ints(series: pl.Series) -> bool:
    """Numeric without nulls: its NumPy view is exact (nulls would turn into floats)."""
    return series.dtype.is_numeric() and series.null_count() == 0


def run_starts(keys: pl.Series) -> np.ndarray:
    """Per row: does a run of equal keys start here (the first row, or a key change)?"""
    n = len(keys)
    if not _plain_ints(keys):
        new = (keys != keys.shift(1)).fill_null(True)  # as `sequence_index`
        return new.to_numpy() if n else np.zeros(0, dtype=bool)
    values = keys.to_numpy()
    new = np.empty(n, dtype=bool)
    if n:
        new[0] = True
        np.not_equal(values[1:], values[:-1], out=new[1:])
    return new


def order_sequences(df: pl.DataFrame, *, by_time: bool = True) -> pl.DataFrame:
    """Rows grouped by `key`, sequences in order of first appearance, each in time order,
    ties (and everything, when not `by_time`) in file order.

    Data already in that order (Taobao ships each user's events together, in time order)
    is returned as it is: a check (one NumPy pass for integer keys and times) costs far
    less than sorting 100M rows.
    """
    if _plain_ints(df["key"]) and (not by_time or _plain_ints(df["ts"])):
        new = run_starts(df["key"])
        ordered = True
        if by_time and df.height > 1:
            ts = df["ts"].to_numpy()
            back = ts[1:] < ts[:-1]
            back &= ~new[1:]
            ordered = not back.any()
            del back
        # grouped iff no key starts two runs
        if ordered and n_distinct(df["key"].to_numpy()[new]) == np.count_nonzero(new):
            return df
    else:
        new_expr = (pl.col("key") != pl.col("key").shift(1)).fill_null(True)
        ordered_expr = (
            (new_expr | (pl.col("ts") >= pl.col("ts").shift(1))).all() if by_time else pl.lit(True)
        )
        check = df.select(
            ordered=ordered_expr,
            runs=new_expr.sum(),
            keys=pl.col("key").filter(new_expr).n_unique(),
        )
        if check["ordered"].item() and check["keys"].item() == check["runs"].item():
            return df
    first = pl.col("_row").min().over("key").alias("_first")
    keys = ["_first", "ts"] if by_time else ["_first"]
    return (
        df.with_row_index("_row")
        .with_columns(first)
        .sort(keys, maintain_order=True)
        .drop("_row", "_first")
    )


def support(items: pl.Series, mask: np.ndarray | None = None) -> pl.DataFrame:
    """(item, len): how often each raw item occurs (in `mask` rows); a chunked bincount for
    small non-negative ints, else a hash group-by."""
    if items.dtype.is_integer() and items.len():
        arr = items.to_numpy()
        if arr.min() >= 0 and arr.max() < 4 * len(arr) + 2**24:
            counts = chunked_bincount(arr, int(arr.max()) + 1, mask)
            ids = np.flatnonzero(counts)
            return pl.DataFrame(
                {"item": pl.Series(ids).cast(items.dtype), "len": counts[ids].astype(np.uint32)}
            )
    if mask is not None:
        items = items.filter(pl.Series(mask))
    return items.alias("item").to_frame().group_by("item").len()


def pointers(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For events grouped by sequence: `first` (no earlier event) and `start` (row of the
    sequence's first event), vectorised in NumPy (UInt32 rows while they fit)."""
    n = len(seq)
    first = np.ones(n, dtype=bool)
    if n > 1:
        np.not_equal(seq[1:], seq[:-1], out=first[1:])
    start = np.arange(n, dtype=np.uint32 if n < 2**32 else np.uint64)
    start[~first] = 0
    np.maximum.accumulate(start, out=start)
    return first, start


def examples_by_split(
    events: pl.DataFrame, *, target: str, restrict_train: bool
) -> dict[str, pl.DataFrame]:
    """Every event with an earlier event of its sequence is a target in its split.

    With target "buy", valid/test keep buy targets only, and train too when `restrict_train`.
    """
    return examples_and_targets(events, target=target, restrict_train=restrict_train)[0]


def examples_and_targets(
    events: pl.DataFrame, *, target: str, restrict_train: bool
) -> tuple[dict[str, pl.DataFrame], np.ndarray]:
    """`examples_by_split`, and per event row the split whose example targets it
    (NO_TARGET: none), which `split_counts` takes as it is. Each row gets one such code,
    so each split is one filter."""
    first, start = pointers(events["seq"].to_numpy())
    code = events["split"].to_numpy().copy()
    code[first] = NO_TARGET
    if target == "buy":
        other = events["behavior"].to_numpy() != BUY
        if not restrict_train:
            other &= code != TRAIN
        code[other] = NO_TARGET
    del first
    rows = pl.DataFrame({"start": start, "code": code}).with_row_index("pos")
    del start
    cast = pl.col("pos", "start").cast(pl.UInt64)
    examples = {
        name: rows.filter(pl.col("code") == c).select(cast) for c, name in enumerate(SPLITS)
    }
    return examples, code


def require_examples(
    examples: dict[str, pl.DataFrame],
    hints: dict[str, str],
    splits=SPLITS,
    spans: dict[str, str] | None = None,
) -> None:
    """A split left without examples is a clear error naming its time span (when it has
    one) and the parameters to relax."""
    for split in splits:
        if examples[split].height == 0:
            span = f" ({spans[split]})" if spans and split in spans else ""
            raise DataError(
                f"the {split} split{span} has no examples after the recipe's filters",
                option="--set",
                hint=hints.get(split, "relax the protocol's filters"),
            )


def n_distinct(values: np.ndarray) -> int:
    """Distinct count: a presence table for small non-negative ints, else a hash."""
    if len(values) == 0:
        return 0
    if values.dtype.kind in "ui" and values.min() >= 0 and values.max() < 4 * len(values) + 2**24:
        seen = np.zeros(int(values.max()) + 1, dtype=bool)
        seen[values] = True
        return int(np.count_nonzero(seen))
    return pl.Series(values).n_unique()


def split_counts(
    events: pl.DataFrame,
    examples: dict[str, pl.DataFrame],
    n_categories: int,
    targets: np.ndarray | None = None,
) -> dict[str, Any]:
    """Per split: examples, sequences, events, items, categories, target items; and totals.

    Row counts are comparisons; distinct counts are presence tables (value x split, and
    value x split of the row's example), each one chunked pass over a column, run in two
    threads (NumPy releases the GIL). `targets`: the per-row codes of
    `examples_and_targets` when the recipe has them (else they are made from `examples`).
    """
    from bench.datasets.schema import BEHAVIORS

    n = events.height
    split = events["split"].to_numpy()
    item, seq = events["item"].to_numpy(), events["seq"].to_numpy()
    if targets is None:
        targets = target_codes(n, examples)
    with ThreadPoolExecutor(2, thread_name_prefix="counts") as pool:
        jobs = {
            "items": pool.submit(presence_by_code, item, split, len(SPLITS)),
            "categories": pool.submit(
                presence_by_code, events["category"].to_numpy(), split, len(SPLITS)
            ),
        }
        if targets is not None:
            jobs["target_items"] = pool.submit(presence_by_code, item, targets, NO_TARGET + 1)
            jobs["sequences"] = pool.submit(presence_by_code, seq, targets, NO_TARGET + 1)
        seen = {key: job.result() for key, job in jobs.items()}
    seen["categories"][0] = False  # category 0 is unknown: never counted
    per_split = chunked_bincount(split, len(SPLITS), None)
    counts: dict[str, Any] = {}
    for code, name in enumerate(SPLITS):
        pos = examples[name]["pos"]
        counts[name] = {
            "examples": len(pos),
            "sequences": distinct_in(seen, "sequences", code, seq, pos),
            "events": int(per_split[code]),
            "items": int(np.count_nonzero(seen["items"][:, code])),
            "categories": int(np.count_nonzero(seen["categories"][:, code])),
            "target_items": distinct_in(seen, "target_items", code, item, pos),
        }
    counts["total"] = {
        "events": n,
        "sequences": int(seq.max()) + 1 if n else 0,
        "items": int(np.count_nonzero(seen["items"].any(axis=1))),
        "categories": n_categories,
    }
    behaviors = chunked_bincount(events["behavior"].to_numpy(), len(BEHAVIORS) + 1, None)
    counts["behaviors"] = {b: int(behaviors[i + 1]) for i, b in enumerate(BEHAVIORS)}
    return counts


def target_codes(n: int, examples: dict[str, pl.DataFrame]) -> np.ndarray | None:
    """Per event row, the split whose example targets it (NO_TARGET: none); None when some
    row is the target of two examples (then the counts gather instead)."""
    codes = np.full(n, NO_TARGET, dtype=np.uint8)
    for code, name in enumerate(SPLITS):
        codes[examples[name]["pos"].to_numpy()] = code
    found = chunked_bincount(codes, NO_TARGET, None)
    return codes if all(found[c] == examples[s].height for c, s in enumerate(SPLITS)) else None


def distinct_in(
    seen: dict[str, np.ndarray], key: str, code: int, values: np.ndarray, pos: pl.Series
) -> int:
    """Distinct `values` among a split's targets: from the presence table when there is
    one, else by gathering the target rows."""
    if key in seen:
        return int(np.count_nonzero(seen[key][:, code]))
    rows = pos.to_numpy()
    return n_distinct(values[rows]) if len(rows) else 0


def presence_by_code(values: np.ndarray, codes: np.ndarray, n_codes: int) -> np.ndarray:
    """(max value + 1, n_codes) booleans: does the value occur in a row of that code? One
    chunked pass that sets value * n_codes + code in a flat table (setting True twice is
    harmless, so repeated indices need no ufunc.at)."""
    size = int(values.max()) + 1 if len(values) else 1
    seen = np.zeros((size, n_codes), dtype=bool)
    flat = seen.reshape(-1)
    for lo in range(0, len(values), CHUNK_ROWS):
        key = values[lo : lo + CHUNK_ROWS].astype(np.int64)
        key *= n_codes
        key += codes[lo : lo + CHUNK_ROWS]
        flat[key] = True
    return seen


# ---------------------------------------------------------------- sampled negatives


def sample_negatives(
    targets: np.ndarray, n_items: int, k: int, seed: int, split_code: int
) -> np.ndarray:
    """(len(targets), k) distinct items in 1..n_items, none equal to the row's target.

    Uniform; small catalogues draw by random keys, large ones by rejection of the few
    collisions, both vectorised.
    """
    if k > n_items - 1:
        raise ConfigError(
            f"{k} sampled negatives asked, but only {n_items - 1} items can be negatives",
            option="--param sampled_negatives",
            hint=f"use at most {n_items - 1}",
        )
    rng = np.random.default_rng([seed, split_code])
    rows = len(targets)
    out = np.empty((rows, k), dtype=np.uint32)
    chunk = max(1, 20_000_000 // max(n_items, 1))
    if k * 4 >= n_items or chunk >= 64:
        for lo in range(0, rows, chunk):  # per block of rows, not per row
            hi = min(rows, lo + chunk)
            keys = rng.random((hi - lo, n_items))
            keys[np.arange(hi - lo), targets[lo:hi] - 1] = 2.0  # never among the k smallest
            out[lo:hi] = np.argpartition(keys, k - 1, axis=1)[:, :k] + 1
        return out
    draw = rng.integers(1, n_items + 1, size=(rows, k), dtype=np.int64)
    while True:
        srt = np.sort(draw, axis=1)
        bad = (srt[:, 1:] == srt[:, :-1]).any(axis=1) | (draw == targets[:, None]).any(axis=1)
        if not bad.any():
            break
        draw[bad] = rng.integers(1, n_items + 1, size=(int(bad.sum()), k), dtype=np.int64)
    out[:] = draw
    return out


def negatives_for(built: Built, params: Params) -> dict[str, pl.DataFrame]:
    """negatives_<split> frames for valid and test when sampled metrics are requested."""
    k = params.sampled_negatives
    if not k:
        return {}
    n_items = built.items.height
    out = {}
    for code, split in ((VALID, "valid"), (TEST, "test")):
        ex = built.examples[split]
        targets = built.events["item"].gather(ex["pos"]).to_numpy().astype(np.int64)
        neg = sample_negatives(targets, n_items, k, params.negatives_seed, code)
        series = pl.Series("negatives", neg).cast(pl.List(pl.UInt32)) if len(neg) else None
        if series is None:
            series = pl.Series("negatives", [], dtype=pl.List(pl.UInt32))
        out[split] = pl.DataFrame([series])
    return out
