"""session-srgnn: SR-GNN's published preprocessing (CRIPAC-DIG/SR-GNN, datasets/preprocess.py),
step for step, so that its train and test sequences come out exactly.

1. only views / clicks are read (SR-GNN reads train-item-views.csv / yoochoose-clicks.dat);
   other behaviours are dropped and counted.
2. a session's events are ordered by time, ties by file order (Diginetica: by timeframe,
   a stable sort, which ts = eventdate + timeframe reproduces), or kept in file order
   (`order="file"`, Yoochoose). A session's date is that of its LAST ROW IN FILE ORDER:
   its day (`date="day"`, Diginetica's eventdate) or its time in seconds (`"second"`,
   Yoochoose).
3. sessions of length 1 are dropped; items seen fewer than `min_item_support` (5) times
   over ALL remaining sessions (test included: SR-GNN's recipe, not ours) are removed;
   sessions left shorter than 2 are dropped.
4. split date = the latest session date - `test_days` * 86400 s. Sessions dated before it
   are training, after it test; sessions dated exactly on it are in neither (as in the
   script; with day dates that is the 8th day before the last, counted in drops).
5. training sessions in date order (ties: first appearance in the file); items renumbered
   1.. in order of first appearance in them. Test sessions, same order, lose items not
   so numbered and are dropped when shorter than 2.
6. prefix augmentation after the split: for a session s and i = 1..len(s)-1, target
   s[-i], history s[:-i]; examples are stored in that order.

`train_portion` N keeps the most recent 1/N of training examples (int(n / N), SR-GNN's
yoochoose1_4 / yoochoose1_64). SR-GNN has no validation split: `valid_fraction` holds out
the most recent fraction (int(sessions * f)) of the training sessions that keep examples,
whole, as `valid`; train + valid is SR-GNN's training set, example for example and in
its order, and `valid_fraction=0` gives exactly SR-GNN's training set with an empty valid
split. The test split and the item numbering are always exactly SR-GNN's.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from bench.datasets.protocols.base import Built, DataInfo, Params, Protocol, register_protocol
from bench.datasets.protocols.clock import MS_PER_DAY, iso
from bench.datasets.protocols.examples import pointers, require_examples, sequence_index
from bench.datasets.protocols.load import count_drop, drop_missing_time, load_events
from bench.datasets.protocols.splits import TEST, TRAIN, VALID
from bench.datasets.protocols.vocab import category_vocab, index_lookup, item_table
from bench.errors import ConfigError, DataError

PV = 1


class SrgnnParams(Params):
    test_days: int = Field(7, ge=1)
    date: Literal["day", "second"] = "day"
    order: Literal["time", "file"] = "time"
    min_item_support: int = Field(5, ge=1)
    valid_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    train_portion: int = Field(1, ge=1)


@register_protocol
class SessionSrgnn(Protocol):
    name = "session-srgnn"
    version = 1
    description = "SR-GNN's preprocessing exactly (for reproducing papers)"
    Params = SrgnnParams
    dataset_defaults = {
        "yoochoose": {"test_days": 1, "date": "second", "order": "file", "train_portion": 64}
    }

    def build(self, frame: pl.LazyFrame, params: SrgnnParams, data: DataInfo) -> Built:
        p = params
        if p.target != "any":
            raise ConfigError(
                "session-srgnn predicts the next click; it has no buy targets",
                option="--target",
                hint="use target 'any', or session-time for buy targets",
            )
        df, drops = load_events(frame, data, sequence="session", with_row=True)
        df = drop_missing_time(df, drops)
        n = df.height
        df = df.filter(pl.col("behavior") == PV)
        count_drop(drops, "not_a_view", n - df.height)
        if df["key"].null_count() == df.height:
            raise DataError(
                "session-srgnn needs the data's own session ids; this data has none",
                column="session_id",
                hint="use session-time, which cuts sessions at an inactivity gap",
            )
        n = df.height
        df = df.filter(pl.col("key").is_not_null()).drop("user")
        count_drop(drops, "missing_session_id", n - df.height)

        within = ["key", "ts", "row"] if p.order == "time" else ["key", "row"]
        df = df.sort(within)
        unit = MS_PER_DAY if p.date == "day" else 1000
        sessions = df.group_by("key").agg(
            first_row=pl.col("row").min(),
            date=(pl.col("ts").sort_by("row").last() // unit) * (unit // 1000),
            length=pl.len(),
        )
        short = sessions.filter(pl.col("length") < 2)
        count_drop(drops, "session_of_length_1", int(short["length"].sum()))
        df = df.filter(pl.col("key").is_in(short["key"].implode()).not_())

        n = df.height
        df = df.filter(pl.len().over("item") >= p.min_item_support)
        count_drop(drops, "item_support_below_min", n - df.height)
        n = df.height
        df = df.filter(pl.len().over("key") >= 2)
        count_drop(drops, "session_shorter_than_2", n - df.height)
        if df.height == 0:
            raise DataError(
                f"no session keeps 2 events of items seen {p.min_item_support} times",
                option="--param min_item_support",
                hint="lower min_item_support",
            )

        sessions = sessions.join(df.select("key").unique(), on="key", how="semi")
        max_date = int(sessions["date"].max())  # type: ignore[arg-type]
        split_date = max_date - 86400 * p.test_days
        sessions = sessions.with_columns(
            part=pl.when(pl.col("date") < split_date)
            .then(TRAIN)
            .when(pl.col("date") > split_date)
            .then(TEST)
            .otherwise(None)
            .cast(pl.UInt8)
        )
        on_split = sessions.filter(pl.col("part").is_null())["key"]
        sessions = sessions.filter(pl.col("part").is_not_null()).sort(["part", "date", "first_row"])
        n = df.height
        df = df.filter(pl.col("key").is_in(on_split.implode()).not_())
        count_drop(drops, "session_on_split_date", n - df.height)
        order = sessions.select("key", "part").with_row_index("rank")
        df = df.join(order, on="key", how="inner").sort(["rank", *within[1:]])

        train = df.filter(pl.col("part") == TRAIN)
        if train.height == 0:
            raise DataError(
                f"no session is dated before the split date, {p.test_days} day(s) before the last",
                option="--param test_days",
                hint="lower test_days",
            )
        vocab = (
            train.select("item")
            .with_row_index("first")
            .group_by("item")
            .agg(pl.col("first").min())
            .sort("first")["item"]
        )
        test = df.filter(pl.col("part") == TEST)
        test = test.with_columns(index=index_lookup(test["item"], vocab))
        n = test.height
        test = test.filter(pl.col("index").is_not_null())
        count_drop(drops, "item_unseen_in_train", n - test.height)
        test_drop = (n - test.height) / n if n else 0.0
        n = test.height
        test = test.filter(pl.len().over("key") >= 2)
        count_drop(drops, "session_shorter_than_2", n - test.height)
        train = train.with_columns(index=index_lookup(train["item"], vocab))

        categories = category_vocab(train["category"])
        rows = pl.concat([train, test])
        is_train = rows["part"].to_numpy() == TRAIN
        items, cats = item_table(vocab, rows["index"], rows["category"], is_train, categories)
        events = rows.select(
            sequence_index(pl.col("rank")).alias("seq"),
            pl.col("index").cast(pl.UInt32).alias("item"),
            pl.col("behavior"),
            index_lookup(rows["category"], categories).fill_null(0).alias("category"),
            (pl.col("ts") // 1000).alias("ts"),
            pl.col("part").alias("split"),
        )
        events, examples = self._examples(events, p)
        require_examples(
            examples,
            {"train": "lower train_portion or min_item_support", "test": "raise test_days"},
            splits=("train", "test"),
        )
        info = {
            "split_date": iso(split_date * 1000, "UTC"),
            "max_date": iso(max_date * 1000, "UTC"),
            "valid": "most recent valid_fraction of SR-GNN's training sessions, held out",
            "target_drop_fraction": {"valid": 0.0, "test": test_drop},
        }
        return Built(events, examples, items, cats, drops, info)

    @staticmethod
    def _examples(
        events: pl.DataFrame, p: SrgnnParams
    ) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
        """SR-GNN's process_seqs: per session in order, targets from the last back to the 2nd."""
        first, start = pointers(events["seq"].to_numpy())
        ptr = pl.DataFrame(
            {
                "pos": np.arange(events.height, dtype=np.uint64),
                "start": start.astype(np.uint64),
                "seq": events["seq"],
                "split": events["split"],
            }
        )
        ptr = ptr.filter(~first).sort(["seq", "pos"], descending=[False, True])
        train = ptr.filter(pl.col("split") == TRAIN)
        if p.train_portion > 1:
            keep = train.height // p.train_portion
            if keep == 0:
                raise DataError(
                    f"train_portion {p.train_portion} leaves no training example",
                    option="--param train_portion",
                    hint=f"use at most {train.height}",
                )
            train = train.tail(keep)
        seqs = train["seq"].unique(maintain_order=True)
        n_valid = int(seqs.len() * p.valid_fraction)
        held = seqs.tail(n_valid) if n_valid else seqs.clear()
        is_valid = pl.col("seq").is_in(held.implode())
        examples = {
            "train": train.filter(~is_valid).select("pos", "start"),
            "valid": train.filter(is_valid).select("pos", "start"),
            "test": ptr.filter(pl.col("split") == TEST).select("pos", "start"),
        }
        events = events.with_columns(
            split=pl.when(is_valid).then(VALID).otherwise(pl.col("split")).cast(pl.UInt8)
        )
        return events, examples
