"""MovieLens 100K (GroupLens): 100,000 ratings of 1,682 movies by 943 users, 1997-98.

Reads GroupLens' `u.data` (tab-separated user,item,rating,timestamp, no header) or
RecBole's atomic `ml-100k.inter` (tab-separated, header with :token / :float tags). Every
rating is an interaction (pv). With RecBole's `ml-100k.item`, an item's category is its
first genre; with `u.data` the category is left null.
"""

from __future__ import annotations

import polars as pl

from bench.datasets.adapters.base import SourceAdapter
from bench.datasets.io.csv import CsvFile
from bench.datasets.io.fields import Field, float_field, id_field
from bench.datasets.registry import register_dataset
from bench.datasets.schema import canonical, seconds_to_ts

INTER = "ml-100k.inter"
ITEMS = "ml-100k.item"
UDATA = "u.data"
_TIME = dict(expect="a Unix time in seconds", fix="fix or delete the line")
_RATING = dict(expect="a rating number", required=False)


@register_dataset
class MovieLens100kAdapter(SourceAdapter):
    name = "ml-100k"
    description = "MovieLens 100K: 100k ratings, 943 users, 1,682 movies (ratings as views)"
    files = (UDATA, INTER, ITEMS)
    homepage = "https://grouplens.org/datasets/movielens/100k/"
    default_protocol = "user-loo"

    def _files(self) -> tuple[CsvFile, CsvFile | None]:
        self.check_options()
        path = self.require(INTER, UDATA)
        if path.name == UDATA:
            ratings = CsvFile(
                path,
                (
                    id_field("user_id"),
                    id_field("item_id"),
                    float_field("rating", **_RATING),
                    float_field("timestamp", **_TIME),
                ),
                separator="\t",
                header=False,
                quote_char=None,
                what="tab-separated user id, item id, rating, timestamp (no header)",
            )
            return ratings, None
        ratings = CsvFile(
            path,
            (
                id_field("user_id:token"),
                id_field("item_id:token"),
                float_field("rating:float", **_RATING),
                float_field("timestamp:float", **_TIME),
            ),
            separator="\t",
            quote_char=None,
            what="RecBole atomic file: tab-separated user_id:token, item_id:token, "
            "rating:float, timestamp:float with a header",
        )
        items = None
        if (self.root / ITEMS).exists():
            items = CsvFile(
                self.root / ITEMS,
                (id_field("item_id:token"), Field("class:token_seq", required=False)),
                separator="\t",
                quote_char=None,
                what="RecBole atomic item file with item_id:token and class:token_seq",
            )
        return ratings, items

    def sources(self) -> list[CsvFile]:
        return [f for f in self._files() if f is not None]

    def scan(self) -> pl.LazyFrame:
        ratings, items = self._files()
        lf = ratings.scan()
        if ratings.header:
            lf = lf.rename({"user_id:token": "user_id", "item_id:token": "item_id"})
            lf = lf.rename({"timestamp:float": "timestamp"})
        category = None
        if items is not None:
            genres = items.scan().select(
                pl.col("item_id:token").alias("item_id"),
                pl.col("class:token_seq").str.split(" ").list.first().alias("genre"),
            )
            lf = lf.join(genres, on="item_id", how="left", maintain_order="left")
            category = pl.col("genre")
        return canonical(
            lf,
            user=pl.col("user_id"),
            item=pl.col("item_id"),
            category=category if category is not None else pl.lit(None, dtype=pl.String),
            behavior="pv",
            ts=seconds_to_ts(pl.col("timestamp")),
        )
