"""DIGINETICA (CIKM Cup 2016, track 2): anonymous and logged-in e-commerce sessions.

Views come from `train-item-views.csv` (the competition file) or SR-GNN's
`sample_train-item-views.csv`: ';'-separated session;user;item;timeframe;eventdate, where
timeframe is ms since the session started, so ts = eventdate (UTC midnight) + timeframe.
`train-purchases.csv`, when present, adds buy events; `product-categories.csv`, when
present, gives each item its category. A `user_id` of NA (anonymous) becomes null.

Option `purchases` (default: true with the full views file, false with the sample) adds the purchases; SR-GNN's recipe uses views only,
so `session-srgnn` keeps `behavior == "pv"` (or pass purchases=false).
"""

from __future__ import annotations

import polars as pl

from bench.datasets.adapters.base import SourceAdapter
from bench.datasets.io.csv import CsvFile
from bench.datasets.io.fields import date_field, id_field, int_field
from bench.datasets.registry import register_dataset
from bench.datasets.schema import TIMESTAMP, canonical

VIEWS = ("train-item-views.csv", "sample_train-item-views.csv")
PURCHASES = "train-purchases.csv"
CATEGORIES = "product-categories.csv"

_TIMEFRAME = dict(expect="a whole number of milliseconds", fix="fix or delete the line")
_DATE = dict(expect="a date YYYY-MM-DD")


def _ts() -> pl.Expr:
    day = pl.col("eventdate").str.strptime(pl.Date, "%Y-%m-%d").cast(TIMESTAMP)
    return day + pl.duration(milliseconds=pl.col("timeframe"))


@register_dataset
class DigineticaAdapter(SourceAdapter):
    name = "diginetica"
    description = "DIGINETICA CIKM Cup 2016: e-commerce sessions, item views and purchases"
    files = (*VIEWS, PURCHASES, CATEGORIES)
    homepage = "https://competitions.codalab.org/competitions/11161"
    default_protocol = "session-srgnn"
    option_help = {
        "purchases": "add train-purchases.csv as buy events (default: true with the full "
        "train-item-views.csv, false with SR-GNN's sample, which shares only 138 of the "
        "12,630 purchase sessions)"
    }

    def _files(self) -> tuple[CsvFile, CsvFile | None, CsvFile | None]:
        self.check_options()
        views = CsvFile(
            self.require(*VIEWS),
            (
                id_field("session_id", "sessionId"),
                id_field("user_id", "userId", required=False),
                id_field("item_id", "itemId"),
                int_field("timeframe", **_TIMEFRAME),
                date_field("eventdate", "%Y-%m-%d", **_DATE),
            ),
            separator=";",
            null_values=("NA",),
            what="';'-separated session_id;user_id;item_id;timeframe;eventdate with a header",
        )
        buys = None
        # SR-GNN's sample holds 2,986 of the competition's sessions: joined with the full
        # purchase file it would gain ~12,500 purchase-only sessions, so it reads views only.
        full_views = views.path.name == "train-item-views.csv"
        if self.flag("purchases", full_views) and (self.root / PURCHASES).exists():
            buys = CsvFile(
                self.root / PURCHASES,
                (
                    id_field("sessionId"),
                    id_field("userId", required=False),
                    int_field("timeframe", **_TIMEFRAME),
                    date_field("eventdate", "%Y-%m-%d", **_DATE),
                    id_field("itemId"),
                ),
                separator=";",
                null_values=("NA",),
                what="';'-separated sessionId;userId;timeframe;eventdate;ordernumber;itemId",
            )
        categories = None
        if (self.root / CATEGORIES).exists():
            categories = CsvFile(
                self.root / CATEGORIES,
                (id_field("itemId"), id_field("categoryId")),
                separator=";",
                what="';'-separated itemId;categoryId with a header",
            )
        return views, buys, categories

    def sources(self) -> list[CsvFile]:
        return [f for f in self._files() if f is not None]

    def scan(self) -> pl.LazyFrame:
        views, buys, categories = self._files()
        frames = [
            canonical(
                views.scan(),
                user=pl.col("user_id"),
                session=pl.col("session_id"),
                item=pl.col("item_id"),
                behavior="pv",
                ts=_ts(),
            )
        ]
        if buys is not None:
            frames.append(
                canonical(
                    buys.scan(),
                    user=pl.col("userId"),
                    session=pl.col("sessionId"),
                    item=pl.col("itemId"),
                    behavior="buy",
                    ts=_ts(),
                )
            )
        events = pl.concat(frames, how="vertical")
        if categories is None:
            return events
        # One category per item (the file has one row per item; `first` guards duplicates).
        item_category = (
            categories.scan()
            .group_by("itemId")
            .agg(pl.col("categoryId").first())
            .rename({"itemId": "item_id", "categoryId": "cat"})
        )
        return (
            events.join(item_category, on="item_id", how="left", maintain_order="left")
            .with_columns(category_id=pl.col("cat"))
            .select(events.collect_schema().names())
        )
