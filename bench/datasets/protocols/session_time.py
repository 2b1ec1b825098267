"""session-time: sessions, a global day-based cut into train / valid / test.

Steps:

1. sessions: the data's own session ids where it has them; rows without one are cut
   into sessions per user at `session_gap_minutes` of inactivity. Events in a session
   are ordered by time, ties by file order.
2. each session goes whole to the part its LAST event falls in (local days in `tz`):
   test = the last `test_days` of the data, valid = the `valid_days` before (as many as
   test by default), train = earlier. So a training session lies entirely before the
   valid window; a valid / test session may begin earlier (those events are history
   only). The events' `split` column is their session's part.
3. sessions shorter than `min_session_length` are dropped (SR-GNN's first step).
4. item support is counted on training sessions only; training events of items seen
   fewer than `min_item_support` times are removed, then training sessions shorter than
   `min_session_length` dropped. The vocabulary is the items of the training sessions
   left. Valid / test events of items outside it are removed (counted), then valid / test
   sessions shorter than `min_session_length` dropped.
5. every prefix of every session is an example of its part (augmentation after the
   split): target = the event at position i >= 1, history = the session before it.
   With target "buy" only buy targets count in valid / test (and in train unless
   `restrict_train_to_target` is off).

Sequences are numbered training sessions first, then valid, then test ones, each in order
of first appearance in the file; items 1..n in the order of their raw ids.
"""

from __future__ import annotations

import polars as pl
from pydantic import Field

from bench.datasets.protocols.base import Built, DataInfo, Params, Protocol, register_protocol
from bench.datasets.protocols.clock import day_after, iso, shift_days, to_ms, zone
from bench.datasets.protocols.examples import (
    examples_by_split,
    order_sequences,
    require_examples,
    sequence_index,
)
from bench.datasets.protocols.load import count_drop, drop_missing_time, load_events
from bench.datasets.protocols.splits import BUY, TEST, TRAIN, VALID
from bench.datasets.protocols.vocab import category_vocab, index_lookup, item_table
from bench.errors import DataError


class SessionTimeParams(Params):
    session_gap_minutes: float = Field(30.0, gt=0)
    tz: str = "UTC"
    test_days: int = Field(1, ge=1)
    valid_days: int | None = Field(None, ge=1, description="None: as many as test_days")
    min_item_support: int = Field(5, ge=1)
    min_session_length: int = Field(2, ge=2)
    restrict_train_to_target: bool = True


def sessionize(df: pl.DataFrame, gap_ms: int) -> tuple[pl.DataFrame, dict[str, int]]:
    """Rows (key = session id or null, user) -> rows with `sess` (UInt32), grouped and ordered.

    Given sessions first, then those cut from each user's session-less events (a gap of
    more than `gap_ms` starts a new one); sessions (and users) in order of first appearance,
    events in time order, ties in file order.
    """
    given = df.filter(pl.col("key").is_not_null())
    parts = []
    if given.height:
        given = order_sequences(given)
        parts.append(given.with_columns(sess=sequence_index(pl.col("key"))).drop("key", "user"))
    cut = df.filter(pl.col("key").is_null())
    if cut.height:
        cut = order_sequences(cut.drop("key").rename({"user": "key"}))
        new = (pl.col("key") != pl.col("key").shift(1)) | (
            pl.col("ts") - pl.col("ts").shift(1) > gap_ms
        )
        offset = int(parts[0]["sess"].max()) + 1 if parts else 0  # type: ignore[arg-type]
        sess = (new.fill_null(True).cum_sum().cast(pl.UInt32) - 1 + offset).alias("sess")
        parts.append(cut.with_columns(sess).drop("key"))
    out = pl.concat(parts) if len(parts) > 1 else parts[0]
    info = {"given": given["key"].n_unique() if given.height else 0}
    info["cut"] = int(out["sess"].n_unique()) - info["given"]
    return out, info


def drop_short(df: pl.DataFrame, minimum: int, drops: dict[str, int]) -> pl.DataFrame:
    n = df.height
    df = df.filter(pl.len().over("sess") >= minimum)
    count_drop(drops, "session_shorter_than_min", n - df.height)
    return df


@register_protocol
class SessionTime(Protocol):
    name = "session-time"
    version = 1
    description = "sessions (given or cut at a gap), global day cut, filters fitted on train"
    Params = SessionTimeParams
    dataset_defaults = {"diginetica": {"test_days": 7}}

    def build(self, frame: pl.LazyFrame, params: SessionTimeParams, data: DataInfo) -> Built:
        p = params
        zone(p.tz)
        df, drops = load_events(frame, data, sequence="session")
        df = drop_missing_time(df, drops)
        if df.height == 0:
            raise DataError("no event has a timestamp", column="ts")
        df, sessions = sessionize(df, int(p.session_gap_minutes * 60_000))

        end = day_after(int(df["ts"].max()), p.tz)  # type: ignore[arg-type]
        test_start = shift_days(end, -p.test_days, p.tz)
        valid_start = shift_days(test_start, -(p.valid_days or p.test_days), p.tz)
        test_ms, valid_ms = to_ms(test_start), to_ms(valid_start)
        last = pl.col("ts").max().over("sess")
        split = (
            pl.when(last < valid_ms).then(TRAIN).when(last < test_ms).then(VALID).otherwise(TEST)
        )
        df = df.with_columns(split=split.cast(pl.UInt8))
        df = drop_short(df, p.min_session_length, drops)

        is_train = pl.col("split") == TRAIN
        train = df.filter(is_train)
        if train.height == 0:
            raise DataError(
                f"no session ends before the valid window ({valid_start.isoformat()})",
                option="--param test_days/valid_days",
                hint="lower test_days / valid_days",
            )
        support = train.group_by("item").len()
        frequent = support.filter(pl.col("len") >= p.min_item_support)["item"]
        n = train.height
        train = train.filter(pl.col("item").is_in(frequent.implode()))
        count_drop(drops, "item_support_below_min_in_train", n - train.height)
        train = drop_short(train, p.min_session_length, drops)
        if train.height == 0:
            raise DataError(
                f"no training session keeps {p.min_session_length} events of items seen "
                f"{p.min_item_support} times",
                option="--param min_item_support",
                hint="lower min_item_support or min_session_length",
            )
        vocab = train["item"].unique().sort()
        rest = df.filter(~is_train)
        del df
        rest = rest.with_columns(index=index_lookup(rest["item"], vocab))
        candidates = rest.filter(pl.col("behavior") == BUY) if p.target == "buy" else rest
        drop_fraction = {}
        for code, name in ((VALID, "valid"), (TEST, "test")):
            part = candidates.filter(pl.col("split") == code)["index"]
            drop_fraction[name] = part.null_count() / part.len() if part.len() else 0.0
        n = rest.height
        rest = rest.filter(pl.col("index").is_not_null())
        count_drop(drops, "item_unseen_in_train", n - rest.height)
        rest = drop_short(rest, p.min_session_length, drops)

        categories = category_vocab(train["category"])
        train = train.with_columns(index=index_lookup(train["item"], vocab))
        rows = pl.concat([train, rest.sort("split", maintain_order=True)])
        del train, rest
        is_train = rows["split"].to_numpy() == TRAIN
        items, cats = item_table(vocab, rows["index"], rows["category"], is_train, categories)
        events = rows.select(
            sequence_index(pl.col("sess")).alias("seq"),
            pl.col("index").cast(pl.UInt32).alias("item"),
            pl.col("behavior"),
            index_lookup(rows["category"], categories).fill_null(0).alias("category"),
            (pl.col("ts") // 1000).alias("ts"),
            pl.col("split"),
        )
        examples = examples_by_split(
            events, target=p.target, restrict_train=p.restrict_train_to_target
        )
        relax = "lower min_item_support or use target 'any'"
        last_day = iso(to_ms(end) - 1, p.tz)[:10]
        require_examples(
            examples,
            {
                "train": relax,
                "valid": f"change valid_days (now {p.valid_days or p.test_days}); {relax}",
                "test": f"change test_days (now {p.test_days}); {relax}",
            },
            spans={
                "train": f"sessions ending before {iso(valid_ms, p.tz)}",
                "valid": f"sessions ending from {iso(valid_ms, p.tz)} to {iso(test_ms, p.tz)}",
                "test": f"sessions ending from {iso(test_ms, p.tz)}; the data ends {last_day}",
            },
        )
        info = {
            "days": {
                "valid_start": iso(valid_ms, p.tz),
                "test_start": iso(test_ms, p.tz),
                "end": iso(to_ms(end), p.tz),
            },
            "sessions": sessions,
            "target_drop_fraction": drop_fraction,
        }
        return Built(events, examples, items, cats, drops, info)
