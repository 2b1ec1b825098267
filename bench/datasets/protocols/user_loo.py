"""user-loo: leave-one-out per user, as RecBole's and SASRec's sequential setups do.

Steps: every interaction is kept (optional filters, off by default as in RecBole's
ml-100k setup: items with fewer than `min_item_support` interactions over the whole data,
then users with fewer than `min_seq_length`); each user's events are ordered by time,
ties by file order (by file order alone for data without clock time, so it works on
one-sequence-per-line files). The parts are RecBole 1.2.1's (`LS: valid_and_test`, order
`TO`): its sequential dataset first turns a user's n events into n - 1 examples (the target
at each position from the second on, the history all earlier events), then its
`_split_index_by_leave_one_out` leaves out min(2, k - 1) of a user's k examples, the last
for test and the one before for valid. So the last event is the test target only when
n >= 3, the second last the valid target only when n >= 4, and every other position from
the second on is a training target: a 2-event sequence is one training example, a 3-event
one a training and a test example. Counting test targets from n >= 2 instead would give
diginetica-dynamicrec 70,025 test targets where RecBole has 68,793. The `split` column
says which part each event is.

The vocabulary is every kept item, as in RecBole, so an item seen only as a test target is
still a known (if untrained) item. Filters count over all interactions, not train only:
this protocol is for cross-checks with published numbers, not a time-safe split.
With target "buy", valid/test targets that are not purchases are left out (and train
targets too unless `restrict_train_to_target` is off).
"""

from __future__ import annotations

import polars as pl
from pydantic import Field

from bench.datasets.protocols.base import Built, DataInfo, Params, Protocol, register_protocol
from bench.datasets.protocols.examples import (
    examples_by_split,
    order_sequences,
    require_examples,
    sequence_index,
)
from bench.datasets.protocols.load import count_drop, drop_missing_time, load_events
from bench.datasets.protocols.splits import TEST, TRAIN, VALID
from bench.datasets.protocols.vocab import category_vocab, index_lookup, item_table
from bench.errors import DataError


class UserLooParams(Params):
    min_item_support: int = Field(0, ge=0)
    min_seq_length: int = Field(0, ge=0)
    restrict_train_to_target: bool = True


@register_protocol
class UserLoo(Protocol):
    name = "user-loo"
    # 2: parts as RecBole's (test from 3 events, valid from 4); 1 counted them from 2 and 3
    version = 2
    description = (
        "leave-one-out per user as RecBole: last = test (3+ events), second last = valid (4+)"
    )
    Params = UserLooParams
    needs_time = False

    def build(self, frame: pl.LazyFrame, params: UserLooParams, data: DataInfo) -> Built:
        p = params
        df, drops = load_events(frame, data, sequence="user")
        if data.has_time:
            df = drop_missing_time(df, drops)
        df = order_sequences(df, by_time=data.has_time)
        if p.min_item_support > 0:
            n = df.height
            df = df.filter(pl.len().over("item") >= p.min_item_support)
            count_drop(drops, "item_support_below_min", n - df.height)
        if p.min_seq_length > 0:
            n = df.height
            df = df.filter(pl.len().over("key") >= p.min_seq_length)
            count_drop(drops, "sequence_shorter_than_min", n - df.height)
        if df.height == 0:
            raise DataError(
                "every interaction was filtered away",
                option="--param min_item_support/min_seq_length",
                hint="lower min_item_support or min_seq_length",
            )
        df = df.with_columns(seq=sequence_index(pl.col("key")))
        df = df.with_columns(
            position=pl.int_range(pl.len(), dtype=pl.Int64).over("seq"),
            length=pl.len().over("seq").cast(pl.Int64),
        )
        # RecBole leaves out min(2, examples - 1) of a user's length - 1 examples
        split = (
            pl.when((pl.col("length") >= 3) & (pl.col("position") == pl.col("length") - 1))
            .then(TEST)
            .when((pl.col("length") >= 4) & (pl.col("position") == pl.col("length") - 2))
            .then(VALID)
            .otherwise(TRAIN)
            .cast(pl.UInt8)
        )
        df = df.with_columns(split=split)
        vocab = df["item"].unique().sort()
        categories = category_vocab(df["category"])
        df = df.with_columns(index=index_lookup(df["item"], vocab))
        is_train = df["split"].to_numpy() == TRAIN
        items, cats = item_table(vocab, df["index"], df["category"], is_train, categories)
        seconds = (pl.col("ts") // 1000) if data.has_time else pl.col("position")
        events = df.select(
            pl.col("seq"),
            pl.col("index").alias("item"),
            pl.col("behavior"),
            index_lookup(df["category"], categories).fill_null(0).alias("category"),
            seconds.cast(pl.Int64).alias("ts"),
            pl.col("split"),
        )
        examples = examples_by_split(
            events, target=p.target, restrict_train=p.restrict_train_to_target
        )
        hint = "lower min_seq_length / min_item_support, or use target 'any'"
        require_examples(examples, {s: hint for s in ("train", "valid", "test")})
        return Built(events, examples, items, cats, drops, {})
