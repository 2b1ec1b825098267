"""Data set adapters register themselves here; one file per adapter in `adapters/`.

Adding a data set means adding one module to `bench/datasets/adapters/` that
subclasses `Adapter` (or `SourceAdapter`, both in `adapters/base.py`) and decorates it
with `@register_dataset`; nothing else changes.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.datasets.adapters.base import Adapter
from bench.registry import Registry

DATASETS: Registry[type[Adapter]] = Registry(
    "data set", "bench.datasets.adapters", option="--dataset"
)


def register_dataset(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make an adapter available under `cls.name`."""
    return DATASETS.register(cls)


def list_datasets() -> dict[str, type[Adapter]]:
    return DATASETS.classes()


def data_root(name: str, data_dir: str | Path | None = None) -> Path:
    """Where a data set's raw files live: --data-dir, else $BENCH_DATA_DIR/<name>, else ./data/<name>.

    `--data-dir` may name the data set's own folder or the folder that holds it.
    """
    if data_dir is not None:
        base = Path(data_dir)
        return base / name if (base / name).is_dir() else base
    return Path(os.environ.get("BENCH_DATA_DIR", "data")) / name


def get_adapter(name: str, data_dir: str | Path | None = None, **options) -> Adapter:
    return DATASETS.get(name)(root=data_root(name, data_dir), options=options)
