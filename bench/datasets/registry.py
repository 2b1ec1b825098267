"""Data set adapters register themselves here; one file per adapter in `adapters/`.

Adding a data set means adding one module to `bench/datasets/adapters/` that
subclasses `Adapter` and decorates it with `@register_dataset`; nothing else changes.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import polars as pl

from bench.errors import ConfigError, DataError

_ADAPTERS: dict[str, type[Adapter]] = {}


@dataclass
class Adapter:
    """Reads one data set's raw files, lazily, into the canonical schema.

    Subclasses set the class attributes and implement `scan`.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    # File names as the publisher ships them; any one alternative of each group suffices.
    files: ClassVar[tuple[str, ...]]
    homepage: ClassVar[str]
    default_protocol: ClassVar[str]
    has_time: ClassVar[bool] = True  # False: line order stands in for time
    synthetic: ClassVar[bool] = False
    # Per-protocol parameter defaults this data set needs (e.g. Taobao's official
    # window and UTC+8 day boundaries for user-time); they enter the protocol hash.
    protocol_defaults: ClassVar[dict[str, dict]] = {}

    root: Path
    options: dict = field(default_factory=dict)

    def scan(self) -> pl.LazyFrame:
        """Canonical LazyFrame: user_id, session_id, item_id, category_id, behavior, ts."""
        raise NotImplementedError

    def raw_files(self) -> list[Path]:
        """The raw files this adapter reads (fingerprinted into the artifact)."""
        return [self.root / f for f in self.files if (self.root / f).exists()]

    def require(self, *names: str) -> Path:
        """The first of `names` that exists under root, or a clear error (a folder where
        the file belongs is one too: reading it would fail deep inside Polars)."""
        for name in names:
            path = self.root / name
            if path.is_dir():
                raise DataError(
                    f"{name} is a folder, but data set {self.name!r} needs it to be a file",
                    file=path,
                    hint=f"put the file {name} itself here (from {self.homepage}); "
                    "an archive unpacked into a folder of that name holds it one level down",
                )
            if path.exists():
                return path
        raise DataError(
            f"no {' or '.join(names)} for data set {self.name!r}",
            file=self.root,
            hint=f"download it from {self.homepage} and put the file(s) in {self.root}, "
            f"or point --data-dir / $BENCH_DATA_DIR at the folder that holds {self.name}/",
        )


def register_dataset(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make an adapter available under `cls.name`."""
    _ADAPTERS[cls.name] = cls
    return cls


def _load_all() -> None:
    from bench.datasets import adapters

    for info in pkgutil.iter_modules(adapters.__path__):
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
