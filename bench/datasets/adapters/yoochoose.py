"""YOOCHOOSE (RecSys Challenge 2015): 9.2M anonymous sessions of a European retailer.

`yoochoose-clicks.dat`: session,timestamp,item,category with no header and ISO-8601 UTC
times (2014-04-07T10:51:09.277Z); category "0" means unknown, "S" a special offer, other
values a category or a brand id, so it stays text. `yoochoose-buys.dat`:
session,timestamp,item,price,quantity, read as buy events (option `purchases`,
default true). There are no user ids: user_id is null and sessions carry the sequence.
"""

from __future__ import annotations

import polars as pl

from bench.datasets.adapters.base import SourceAdapter
from bench.datasets.io.csv import CsvFile
from bench.datasets.io.fields import Field, id_field
from bench.datasets.registry import register_dataset
from bench.datasets.schema import TIMESTAMP, canonical

CLICKS = "yoochoose-clicks.dat"
BUYS = "yoochoose-buys.dat"
_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"


def _time_field() -> Field:
    return Field(
        "timestamp",
        valid=lambda raw: raw.str.strptime(pl.Datetime("ms"), _FORMAT, strict=False).is_not_null(),
        expect="an ISO-8601 UTC time like 2014-04-07T10:51:09.277Z",
        fix="write times as 2014-04-07T10:51:09.277Z, or delete the line",
    )


def _ts() -> pl.Expr:
    parsed = pl.col("timestamp").str.strptime(pl.Datetime("ms"), _FORMAT)
    return parsed.dt.replace_time_zone("UTC").cast(TIMESTAMP)


@register_dataset
class YoochooseAdapter(SourceAdapter):
    name = "yoochoose"
    description = "YOOCHOOSE RecSys Challenge 2015: 33M clicks and 1.1M buys in sessions"
    files = (CLICKS, BUYS)
    homepage = "https://recsys.acm.org/recsys15/challenge/"
    default_protocol = "session-srgnn"
    option_help = {"purchases": "add yoochoose-buys.dat as buy events (default true)"}

    def _files(self) -> tuple[CsvFile, CsvFile | None]:
        self.check_options()
        clicks = CsvFile(
            self.require(CLICKS),
            (
                id_field("session"),
                _time_field(),
                id_field("item"),
                Field("category", required=False),
            ),
            header=False,
            what="comma-separated session,timestamp,item,category (no header)",
        )
        buys = None
        if self.flag("purchases", True) and (self.root / BUYS).exists():
            buys = CsvFile(
                self.root / BUYS,
                (
                    id_field("session"),
                    _time_field(),
                    id_field("item"),
                    Field("price", required=False),
                    Field("quantity", required=False),
                ),
                header=False,
                what="comma-separated session,timestamp,item,price,quantity (no header)",
            )
        return clicks, buys

    def sources(self) -> list[CsvFile]:
        return [f for f in self._files() if f is not None]

    def scan(self) -> pl.LazyFrame:
        clicks, buys = self._files()
        category = pl.when(pl.col("category") != "0").then(pl.col("category"))
        frames = [
            canonical(
                clicks.scan(),
                session=pl.col("session"),
                item=pl.col("item"),
                category=category,
                behavior="pv",
                ts=_ts(),
            )
        ]
        if buys is not None:
            frames.append(
                canonical(
                    buys.scan(),
                    session=pl.col("session"),
                    item=pl.col("item"),
                    category=pl.lit(None, dtype=pl.String),
                    behavior="buy",
                    ts=_ts(),
                )
            )
        return pl.concat(frames, how="vertical")
