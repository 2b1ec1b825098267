"""Taobao UserBehavior (Alibaba, Tianchi dataset 649): about 100M events of 988k users.

`UserBehavior.csv` has no header: user_id,item_id,category_id,behavior,timestamp, with
behaviour one of pv/buy/cart/fav and the time in Unix seconds. The real file holds a few
rows outside the official window (2017-11-25 to 2017-12-03, China time); they are kept
here and dropped, counted, by the protocol, whose window the defaults below name.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from bench.datasets.adapters.base import SourceAdapter
from bench.datasets.io.csv import CsvFile
from bench.datasets.io.fields import choice_field, id_field, int_field
from bench.datasets.registry import register_dataset
from bench.datasets.schema import BEHAVIORS, Behavior, canonical, seconds_to_ts

FILE = "UserBehavior.csv"


def userbehavior_file(path: Path) -> CsvFile:
    """The layout of a Taobao-format file (also what `taobao-synth` writes)."""
    return CsvFile(
        Path(path),
        (
            id_field("user_id"),
            id_field("item_id"),
            id_field("category_id"),
            choice_field("behavior", BEHAVIORS),
            int_field(
                "timestamp",
                expect="a Unix time in whole seconds",
                fix="timestamps are whole Unix seconds (e.g. 1511544070); fix or delete the line",
            ),
        ),
        separator=",",
        header=False,
        what="comma-separated user_id,item_id,category_id,behavior,timestamp "
        "(no header; behavior pv/fav/cart/buy; Unix seconds)",
    )


def scan_userbehavior(path: Path) -> pl.LazyFrame:
    """A Taobao-format file as a canonical LazyFrame (no sessions; ids as UInt32)."""
    raw = userbehavior_file(path).scan()
    return canonical(
        raw,
        user=pl.col("user_id"),
        item=pl.col("item_id"),
        category=pl.col("category_id"),
        behavior=pl.col("behavior").cast(Behavior),
        ts=seconds_to_ts(pl.col("timestamp")),
    )


@register_dataset
class TaobaoAdapter(SourceAdapter):
    name = "taobao"
    description = "Taobao UserBehavior: 100M pv/fav/cart/buy events, 9 days of Nov-Dec 2017"
    files = (FILE,)
    homepage = "https://tianchi.aliyun.com/dataset/649"
    default_protocol = "user-time"
    protocol_defaults = {
        "user-time": {
            "window_start": "2017-11-25T00:00:00+08:00",
            "window_end": "2017-12-04T00:00:00+08:00",
            "tz": "Asia/Shanghai",
        }
    }

    def sources(self) -> list[CsvFile]:
        self.check_options()
        return [userbehavior_file(self.require(*self.files))]

    def scan(self) -> pl.LazyFrame:
        self.check_options()
        return scan_userbehavior(self.require(*self.files))
