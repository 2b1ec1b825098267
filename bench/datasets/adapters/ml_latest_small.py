"""MovieLens latest-small (GroupLens): about 100k ratings by about 600 users.

`ratings.csv`: userId,movieId,rating,timestamp with a header; every rating is an
interaction (pv). With `movies.csv` (movieId,title,genres), a movie's category is its
first listed genre ("(no genres listed)" gives null).
"""

from __future__ import annotations

import polars as pl

from bench.datasets.adapters.base import SourceAdapter
from bench.datasets.io.csv import CsvFile
from bench.datasets.io.fields import Field, float_field, id_field, int_field
from bench.datasets.registry import register_dataset
from bench.datasets.schema import canonical, seconds_to_ts

RATINGS = "ratings.csv"
MOVIES = "movies.csv"


@register_dataset
class MovieLensLatestSmallAdapter(SourceAdapter):
    name = "ml-latest-small"
    description = "MovieLens latest-small: 100k ratings, about 600 users, 9k movies (as views)"
    files = (RATINGS, MOVIES)
    homepage = "https://grouplens.org/datasets/movielens/latest/"
    default_protocol = "user-loo"

    def _files(self) -> tuple[CsvFile, CsvFile | None]:
        self.check_options()
        ratings = CsvFile(
            self.require(RATINGS),
            (
                id_field("userId"),
                id_field("movieId"),
                float_field("rating", expect="a rating number", required=False),
                int_field("timestamp", expect="a Unix time in whole seconds"),
            ),
            what="comma-separated userId,movieId,rating,timestamp with a header",
        )
        movies = None
        if (self.root / MOVIES).exists():
            movies = CsvFile(
                self.root / MOVIES,
                (id_field("movieId"), Field("genres", required=False)),
                what="comma-separated movieId,title,genres with a header",
            )
        return ratings, movies

    def sources(self) -> list[CsvFile]:
        return [f for f in self._files() if f is not None]

    def scan(self) -> pl.LazyFrame:
        ratings, movies = self._files()
        lf = ratings.scan()
        category = pl.lit(None, dtype=pl.String)
        if movies is not None:
            genre = pl.col("genres").str.split("|").list.first()
            first = movies.scan().select(
                "movieId", pl.when(genre != "(no genres listed)").then(genre).alias("genre")
            )
            lf = lf.join(first, on="movieId", how="left", maintain_order="left")
            category = pl.col("genre")
        return canonical(
            lf,
            user=pl.col("userId"),
            item=pl.col("movieId"),
            category=category,
            behavior="pv",
            ts=seconds_to_ts(pl.col("timestamp")),
        )
