"""Data set adapters register themselves here; one file per adapter in `adapters/`.

Adding a data set means adding one module to `bench/datasets/adapters/` that
subclasses `Adapter` (or `SourceAdapter`, both in `adapters/base.py`) and decorates it
with `@register_dataset`; nothing else changes.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

from bench.datasets.adapters.base import Adapter
from bench.errors import ConfigError

_ADAPTERS: dict[str, type[Adapter]] = {}


def register_dataset(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make an adapter available under `cls.name`."""
    _ADAPTERS[cls.name] = cls
    return cls


def _load_all() -> None:
    from bench.datasets import adapters

    for info in pkgutil.iter_modules(adapters.__path__):
        if info.name != "base":
            importlib.import_module(f"{adapters.__name__}.{info.name}")


def list_datasets() -> dict[str, type[Adapter]]:
    _load_all()
    return dict(sorted(_ADAPTERS.items()))


def data_root(name: str, data_dir: str | Path | None = None) -> Path:
    """Where a data set's raw files live: --data-dir, else $BENCH_DATA_DIR/<name>, else ./data/<name>.

    `--data-dir` may name the data set's own folder or the folder that holds it.
    """
    if data_dir is not None:
        base = Path(data_dir)
        return base / name if (base / name).is_dir() else base
    return Path(os.environ.get("BENCH_DATA_DIR", "data")) / name


def get_adapter(name: str, data_dir: str | Path | None = None, **options) -> Adapter:
    datasets = list_datasets()
    if name not in datasets:
        raise ConfigError(
            f"unknown data set {name!r}",
            option="--dataset",
            hint=f"choose one of: {', '.join(datasets)}",
        )
    return datasets[name](root=data_root(name, data_dir), options=options)
