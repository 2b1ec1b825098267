"""MovieLens 1M (GroupLens): 1,000,209 ratings of 3,706 movies by 6,040 users, 2000-03.

`ratings.dat` is UserID::MovieID::Rating::Timestamp with no header. Every rating is an
interaction (pv); categories are left null (movies.dat titles contain ':' and the file is
Latin-1, so its genres are not joined).
"""

from __future__ import annotations

import polars as pl

from bench.datasets.adapters.base import SourceAdapter
from bench.datasets.io.csv import CsvFile
from bench.datasets.io.fields import float_field, id_field, int_field
from bench.datasets.registry import register_dataset
from bench.datasets.schema import canonical, seconds_to_ts

RATINGS = "ratings.dat"


@register_dataset
class MovieLens1mAdapter(SourceAdapter):
    name = "ml-1m"
    description = "MovieLens 1M: 1M ratings, 6,040 users, 3,706 movies (ratings as views)"
    files = (RATINGS,)
    homepage = "https://grouplens.org/datasets/movielens/1m/"
    default_protocol = "user-loo"

    def sources(self) -> list[CsvFile]:
        self.check_options()
        return [
            CsvFile(
                self.require(RATINGS),
                (
                    id_field("user_id"),
                    id_field("movie_id"),
                    float_field("rating", expect="a rating number", required=False),
                    int_field("timestamp", expect="a Unix time in whole seconds"),
                ),
                separator="::",
                header=False,
                quote_char=None,
                what="UserID::MovieID::Rating::Timestamp lines (no header)",
            )
        ]

    def scan(self) -> pl.LazyFrame:
        (ratings,) = self.sources()
        return canonical(
            ratings.scan(),
            user=pl.col("user_id"),
            item=pl.col("movie_id"),
            category=pl.lit(None, dtype=pl.String),
            behavior="pv",
            ts=seconds_to_ts(pl.col("timestamp")),
        )
