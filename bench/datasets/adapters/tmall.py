"""Tmall (IJCAI-15 repeat buyers): 55M user actions from May to November 2015.

`user_log_format1.csv` has a header user_id,item_id,cat_id,seller_id,brand_id,time_stamp,
action_type. time_stamp is the day as MMDD (511 = May 11) of 2015, so ts is that day's
UTC midnight and order within a day is the file's order; action_type 0 = click (pv),
1 = add to cart, 2 = purchase, 3 = add to favourites. brand_id may be empty.
"""

from __future__ import annotations

import polars as pl

from bench.datasets.adapters.base import SourceAdapter
from bench.datasets.io.csv import CsvFile
from bench.datasets.io.fields import Field, choice_field, id_field
from bench.datasets.registry import register_dataset
from bench.datasets.schema import TIMESTAMP, Behavior, canonical

LOG = "user_log_format1.csv"
ACTIONS = {"0": "pv", "1": "cart", "2": "buy", "3": "fav"}
YEAR = 2015


def _day(raw: pl.Expr, strict: bool) -> pl.Expr:
    text = pl.concat_str(pl.lit(str(YEAR)), raw.str.strip_chars().str.zfill(4))
    return text.str.strptime(pl.Date, "%Y%m%d", strict=strict)


@register_dataset
class TmallAdapter(SourceAdapter):
    name = "tmall"
    description = "Tmall IJCAI-15: 55M click / cart / favourite / purchase actions, day granularity"
    files = (LOG,)
    homepage = "https://tianchi.aliyun.com/dataset/42"
    default_protocol = "session-time"

    def sources(self) -> list[CsvFile]:
        self.check_options()
        return [
            CsvFile(
                self.require(LOG),
                (
                    id_field("user_id"),
                    id_field("item_id"),
                    id_field("cat_id"),
                    Field("seller_id", required=False),
                    Field("brand_id", required=False),
                    Field(
                        "time_stamp",
                        valid=lambda raw: _day(raw, strict=False).is_not_null(),
                        expect=f"a day of {YEAR} written MMDD (e.g. 1111)",
                        fix="write the day as MMDD, or delete the line",
                    ),
                    choice_field("action_type", tuple(ACTIONS)),
                ),
                what="comma-separated user_id,item_id,cat_id,seller_id,brand_id,time_stamp,"
                "action_type with a header",
            )
        ]

    def scan(self) -> pl.LazyFrame:
        (log,) = self.sources()
        return canonical(
            log.scan(),
            user=pl.col("user_id"),
            item=pl.col("item_id"),
            category=pl.col("cat_id"),
            behavior=pl.col("action_type").replace_strict(ACTIONS, return_dtype=Behavior),
            ts=_day(pl.col("time_stamp"), strict=True).cast(TIMESTAMP),
        )
