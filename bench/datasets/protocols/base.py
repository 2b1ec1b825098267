"""What every protocol shares: the base class, typed parameters, the registry and the
recipe hash. The steps the recipes are built from live beside it, one module each:
`splits` (split codes), `load` (reading, drops), `clock` (calendar time), `vocab`
(remapping, item tables), `examples` (sequences, example pointers), `counts` (split
statistics), `negatives` (sampled negatives), and `arrays` (the chunked NumPy kernels).

A protocol turns the canonical LazyFrame of an adapter into a `Built`: the flat events
table and per-split example pointers of the artifact layout (`bench.datasets.artifact`).
Inside a recipe, time is Int64 milliseconds (`ts`) so that orderings are exact; the
artifact stores Unix seconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl
import pydantic
from pydantic import BaseModel, ConfigDict, Field

from bench.errors import ConfigError
from bench.registry import Registry


class Params(BaseModel):
    """Parameters every protocol takes; each protocol extends this with its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: Literal["any", "buy"] = "any"
    max_len: int = Field(50, ge=1, description="history events the DataModule keeps")
    sampled_negatives: int = Field(0, ge=0, description="frozen negatives per valid/test example")
    negatives_seed: int = 0


@dataclass(frozen=True)
class DataInfo:
    """What a recipe may know about the data set besides its rows.

    `adapter`, when given, is the adapter whose frame is read: collecting goes through its
    checked reader, so bad raw data surfaces as a DataError with file, line and column.
    `ready`, when given, takes (file stem, frame) for a final table of the `Built` that a
    recipe has before it ends (prepare writes it meanwhile); the same frame must still be
    in the `Built` it returns.
    """

    dataset: str
    has_time: bool = True
    synthetic: bool = False
    adapter: Any = field(default=None, compare=False, repr=False)
    ready: Callable[[str, pl.DataFrame], None] | None = field(
        default=None, compare=False, repr=False
    )


@dataclass
class Built:
    """A recipe's output, in the artifact layout (see `bench.datasets.artifact`)."""

    events: pl.DataFrame  # seq, item, behavior, category, ts (seconds), split
    examples: dict[str, pl.DataFrame]  # split -> pos, start (UInt64)
    items: pl.DataFrame  # item, raw_item, category, train_count
    categories: pl.DataFrame  # category, raw_category
    drops: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # protocol-specific meta
    negatives: dict[str, pl.DataFrame] = field(default_factory=dict)
    targets: np.ndarray | None = None  # per event row: its example's split (splits.NO_TARGET: none)


class Protocol:
    """A named, versioned recipe. Subclasses set the class attributes and `build`."""

    name: ClassVar[str]
    version: ClassVar[int]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    needs_time: ClassVar[bool] = True  # refuses data whose line order stands in for time
    # Defaults that belong to the recipe for a given data set (below the adapter's own).
    dataset_defaults: ClassVar[dict[str, dict]] = {}

    def resolve(
        self,
        overrides: dict | None = None,
        *,
        dataset: str = "",
        adapter_defaults: dict | None = None,
    ) -> Params:
        """Class defaults < recipe's data-set defaults < adapter's defaults < `overrides`."""
        merged = {**self.dataset_defaults.get(dataset, {}), **(adapter_defaults or {})}
        merged.update(overrides or {})
        fields = self.Params.model_fields
        unknown = sorted(set(merged) - set(fields))
        if unknown:
            raise ConfigError(
                f"protocol {self.name!r} has no parameter(s) {', '.join(unknown)}",
                option="--set",
                hint=f"parameters of {self.name}: {self.describe_params()}",
            )
        try:
            return self.Params(**merged)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "?"
            raise ConfigError(
                f"protocol {self.name!r}, parameter {loc}={merged.get(loc)!r}: {err['msg']}",
                option=f"--param {loc}",
                hint=f"parameters of {self.name}: {self.describe_params()}",
            ) from None

    def describe_params(self) -> str:
        return ", ".join(f"{k}={f.default!r}" for k, f in self.Params.model_fields.items())

    def check_data(self, data: DataInfo) -> None:
        if self.needs_time and not data.has_time:
            fitting = ", ".join(n for n, c in list_protocols().items() if not c.needs_time)
            raise ConfigError(
                f"protocol {self.name!r} needs clock time, but data set {data.dataset!r} has "
                "none (its line order stands in for time)",
                option="--protocol",
                hint=f"use a protocol that works on ordered sequences: {fitting}",
            )

    def build(self, frame: pl.LazyFrame, params: Params, data: DataInfo) -> Built:
        raise NotImplementedError


PROTOCOLS: Registry[type[Protocol]] = Registry(
    "protocol", "bench.datasets.protocols", option="--protocol"
)


def register_protocol(cls: type[Protocol]) -> type[Protocol]:
    """Class decorator: make a protocol available under `cls.name`."""
    return PROTOCOLS.register(cls)


def list_protocols() -> dict[str, type[Protocol]]:
    return PROTOCOLS.classes()


def get_protocol(name: str) -> Protocol:
    return PROTOCOLS.get(name)()


def recipe_hash(
    protocol: Protocol, params: Params, dataset: str, adapter_options: dict | None = None
) -> str:
    """12 hex digits keying the artifact: everything that changes the recipe's output."""
    payload = {
        "protocol": protocol.name,
        "version": protocol.version,
        "params": params.model_dump(mode="json"),
        "dataset": dataset,
        "adapter_options": adapter_options or {},
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
