"""RetailRocket e-commerce events (Kaggle): 2.7M view / addtocart / transaction events.

`events.csv`: timestamp (Unix ms),visitorid,event,itemid,transactionid with a header;
view -> pv, addtocart -> cart, transaction -> buy. Item categories live in the
time-varying item_properties files and are not joined (category_id is null).
"""

from __future__ import annotations

import polars as pl

from bench.datasets.adapters.base import SourceAdapter
from bench.datasets.io.csv import CsvFile
from bench.datasets.io.fields import Field, choice_field, id_field, int_field
from bench.datasets.registry import register_dataset
from bench.datasets.schema import Behavior, canonical, ms_to_ts

EVENTS = "events.csv"
BEHAVIOR = {"view": "pv", "addtocart": "cart", "transaction": "buy"}


@register_dataset
class RetailRocketAdapter(SourceAdapter):
    name = "retailrocket"
    description = "RetailRocket: 4.5 months of view / add-to-cart / transaction events"
    files = (EVENTS,)
    homepage = "https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset"
    default_protocol = "session-time"

    def sources(self) -> list[CsvFile]:
        self.check_options()
        return [
            CsvFile(
                self.require(EVENTS),
                (
                    int_field("timestamp", expect="a Unix time in milliseconds"),
                    id_field("visitorid"),
                    choice_field("event", tuple(BEHAVIOR)),
                    id_field("itemid"),
                    Field("transactionid", required=False),
                ),
                what="comma-separated timestamp,visitorid,event,itemid,transactionid with a header",
            )
        ]

    def scan(self) -> pl.LazyFrame:
        (events,) = self.sources()
        return canonical(
            events.scan(),
            user=pl.col("visitorid"),
            item=pl.col("itemid"),
            behavior=pl.col("event").replace_strict(BEHAVIOR, return_dtype=Behavior),
            ts=ms_to_ts(pl.col("timestamp")),
        )
