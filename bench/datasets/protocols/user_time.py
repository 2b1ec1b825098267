"""user-time: one sequence per user, a global time cut; predict every valid / test event.

Steps, in this order (the Taobao default; DESIGN.md "Default parameters"):

1. keep events in [window_start, window_end); the rest are dropped and counted. Without a
   window_end the window ends at the midnight (in `tz`) after the data's last day.
2. order each user's events by time, ties by file order.
3. collapse consecutive repeats of the same (item, behaviour) within a user to one event
   (once, before any item filter).
4. windows by local days in `tz`: test = the last `test_days`, valid = the `valid_days`
   before, train = everything earlier.
5. item support is counted on training events only; training events of items seen fewer
   than `min_item_support` times are dropped. The vocabulary is the items left; valid /
   test events of items outside it are dropped (neither target nor history, as in
   SR-GNN) and their share of the valid / test events is reported.
6. every event with an earlier kept event of its user is a target of its window's split;
   its history is every earlier event (the DataModule keeps the last `max_len`).
   Training targets are training-window events, so no training input sees a valid or
   test event. With target "buy" only buy targets count in valid / test, and in train
   as well unless `restrict_train_to_target` is off.

Items are numbered 1..n in the order of their raw ids; categories likewise (training
events' categories only; 0 = unknown).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from pydantic import Field

from bench.datasets.protocols.arrays import chunked_bincount, first_rows, support
from bench.datasets.protocols.base import Built, DataInfo, Params, Protocol, register_protocol
from bench.datasets.protocols.clock import day_after, iso, parse_instant, shift_days, to_ms, zone
from bench.datasets.protocols.examples import (
    examples_and_targets,
    order_sequences,
    require_examples,
    run_starts,
)
from bench.datasets.protocols.load import count_drop, drop_missing_time, load_events
from bench.datasets.protocols.splits import TEST, TRAIN, VALID
from bench.datasets.protocols.vocab import category_index, category_vocab, index_codes, items_frame
from bench.errors import ConfigError, DataError


class UserTimeParams(Params):
    window_start: str | None = Field(None, description="ISO instant; None: no lower bound")
    window_end: str | None = Field(None, description="ISO instant; None: after the last day")
    tz: str = "UTC"
    valid_days: int = Field(1, ge=1)
    test_days: int = Field(1, ge=1)
    min_item_support: int = Field(5, ge=1)
    collapse_repeats: bool = True
    restrict_train_to_target: bool = True


MS_PER_YEAR = 365.2425 * 86400 * 1000
# Events after the year 3000 were most likely Unix milliseconds read as seconds.
LATEST_PLAUSIBLE_MS = (3000 - 1970) * MS_PER_YEAR


def outside_window_error(first_ms: int, last_ms: int, start, end, file=None) -> DataError:
    """No event in the window: say so when the times are milliseconds read as seconds,
    else where the data lies (a 1970 span shows seconds read as milliseconds)."""

    def year(ms: int) -> str:
        return f"{1970 + ms / MS_PER_YEAR:,.0f}"

    def when(ms: int) -> str:
        try:
            return iso(ms, "UTC")
        except (ValueError, OverflowError, OSError):  # beyond what datetime holds
            return f"the year {year(ms)}"

    window = f"the window {start.isoformat() if start else '...'} .. {end.isoformat()}"
    if first_ms > LATEST_PLAUSIBLE_MS:
        return DataError(
            f"no event falls inside {window}: these timestamps look like milliseconds "
            f"(read as Unix seconds they fall in the years {year(first_ms)} to {year(last_ms)})",
            file=file,
            hint="write the times as Unix seconds (divide them by 1000); for your own file "
            "(dataset custom) pass -o time_unit=ms instead",
        )
    return DataError(
        f"no event falls inside {window}; the data runs from {when(first_ms)} to {when(last_ms)}",
        option="--param window_start/window_end",
        hint="set a window that overlaps the data, or leave both unset",
    )


@register_protocol
class UserTime(Protocol):
    name = "user-time"
    version = 1
    description = "one sequence per user, global time cut by days, every valid/test event a target"
    Params = UserTimeParams

    def build(self, frame: pl.LazyFrame, params: UserTimeParams, data: DataInfo) -> Built:
        p = params
        zone(p.tz)
        df, drops = load_events(frame, data, sequence="user")
        df = drop_missing_time(df, drops)
        if df.height == 0:
            raise DataError("no event has a timestamp", column="ts")

        end = (
            parse_instant(p.window_end, p.tz, "window_end")
            if p.window_end
            else day_after(int(df["ts"].max()), p.tz)  # type: ignore[arg-type]
        )
        start = parse_instant(p.window_start, p.tz, "window_start") if p.window_start else None
        test_start = shift_days(end, -p.test_days, p.tz)
        valid_start = shift_days(test_start, -p.valid_days, p.tz)
        if start is not None and valid_start <= start:
            raise ConfigError(
                f"the window {start.isoformat()} .. {end.isoformat()} leaves no training days "
                f"before {p.valid_days} valid and {p.test_days} test day(s)",
                option="--param window_start",
                hint="widen the window or lower valid_days / test_days",
            )
        end_ms, test_ms, valid_ms = to_ms(end), to_ms(test_start), to_ms(valid_start)
        n = df.height
        first_ms, last_ms = df["ts"].min(), df["ts"].max()
        inside = pl.col("ts") < end_ms
        if start is not None:
            inside = inside & (pl.col("ts") >= to_ms(start))
        if df.select(inside.all()).item() is False:
            df = df.filter(inside)
        count_drop(drops, "outside_window", n - df.height)
        if df.height == 0:
            files = data.adapter.raw_files() if data.adapter is not None else []
            file = files[0] if len(files) == 1 else None
            raise outside_window_error(first_ms, last_ms, start, end, file)
        df = order_sequences(df)  # each user's events in time order, ties by file order

        # Per-row flags: repeats (against the row before, so once, before any item filter),
        # window codes, and time in seconds (the artifact's unit).
        new = run_starts(df["key"])
        repeats = np.zeros(df.height, dtype=bool)
        if p.collapse_repeats and df.height > 1:
            item, behavior = df["item"].to_numpy(), df["behavior"].to_numpy()
            np.equal(item[1:], item[:-1], out=repeats[1:])
            repeats[1:] &= behavior[1:] == behavior[:-1]
            repeats &= ~new
            del item, behavior
        del new
        count_drop(drops, "consecutive_repeat", np.count_nonzero(repeats))
        split = (
            pl.when(pl.col("ts") < valid_ms)
            .then(TRAIN)
            .when(pl.col("ts") < test_ms)
            .then(VALID)
            .otherwise(TEST)
            .cast(pl.UInt8)
        )
        df = df.with_columns(split.alias("split"))
        split_np = df["split"].to_numpy()
        is_train = split_np == TRAIN
        counts = support(df["item"], is_train & ~repeats)
        if counts.height == 0:
            raise DataError(
                f"no event falls in the training window before {valid_start.isoformat()}",
                option="--param window_start/valid_days/test_days",
                hint="widen the window or lower valid_days / test_days",
            )
        supported = counts.filter(pl.col("len") >= p.min_item_support).sort("item")
        vocab = supported["item"]
        if vocab.len() == 0:
            raise DataError(
                f"no item is seen {p.min_item_support} times in the training window",
                option="--param min_item_support",
                hint="lower min_item_support",
            )

        index = index_codes(df["item"], vocab)  # 0: outside the vocabulary
        unseen = index.to_numpy() == 0
        # rows per (split, unseen, buy) among the collapsed rows, as one bincount
        code = np.left_shift(split_np, 2)
        code |= np.left_shift(unseen.view(np.uint8), 1)
        code |= (df["behavior"].to_numpy() == 4).view(np.uint8)
        code[repeats] = 12
        cells = chunked_bincount(code, 13, None)[:12].reshape(3, 2, 2)
        del code
        count_drop(drops, "item_support_below_min_in_train", cells[TRAIN, 1].sum())
        count_drop(drops, "item_unseen_in_train", cells[VALID:, 1].sum())
        drop_fraction = {}
        for code, split_name in ((VALID, "valid"), (TEST, "test")):
            part = cells[code][:, 1] if p.target == "buy" else cells[code].sum(axis=1)
            drop_fraction[split_name] = float(part[1] / part.sum()) if part.sum() else 0.0

        keep = ~(unseen | repeats)
        del unseen, repeats
        kept_train = keep & is_train
        del is_train, split_np
        categories = category_vocab(df["category"], kept_train)
        # every vocabulary item has training rows: its category is that of the first one
        first = first_rows(index.to_numpy(), vocab.len() + 1, kept_train)[1:]
        assert (first >= 0).all(), "a vocabulary item without a kept training row"
        del kept_train
        item_category = category_index(df["category"].gather(first), categories)
        items, cats = items_frame(vocab, item_category, categories, supported["len"])

        df = df.with_columns(index.alias("item"))
        del index
        if not keep.all():
            df = df.filter(pl.Series(keep))
        del keep
        events = df.select(
            pl.col("key").rle_id().alias("seq"),  # keys have no nulls: runs are users
            "item",
            "behavior",
            category_index(df["category"], categories).alias("category"),  # 0: unknown
            pl.col("ts") // 1000,
            "split",
        )
        del df
        if data.ready is not None:
            data.ready("events", events)  # final: written while the examples are made
        examples, targets = examples_and_targets(
            events, target=p.target, restrict_train=p.restrict_train_to_target
        )
        relax = "lower min_item_support, widen the window or use target 'any'"
        require_examples(
            examples,
            {
                "train": relax,
                "valid": f"raise valid_days (now {p.valid_days}); {relax}",
                "test": f"raise test_days (now {p.test_days}); {relax}",
            },
            spans={
                "train": f"events before {iso(valid_ms, p.tz)}",
                "valid": f"events from {iso(valid_ms, p.tz)} to {iso(test_ms, p.tz)}",
                "test": f"events from {iso(test_ms, p.tz)} to {iso(end_ms, p.tz)}",
            },
        )
        info = {
            "window": {
                "start": start.isoformat() if start else None,
                "valid_start": iso(valid_ms, p.tz),
                "test_start": iso(test_ms, p.tz),
                "end": iso(end_ms, p.tz),
            },
            "target_drop_fraction": drop_fraction,
        }
        return Built(events, examples, items, cats, drops, info, targets=targets)
