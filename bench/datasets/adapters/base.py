"""The adapter base classes: `Adapter` (reads one data set's raw files into the canonical
schema) and `SourceAdapter` (an adapter whose raw files are `bench.datasets.io` sources, so
that bad input is diagnosed to the file, line and column)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import polars as pl

from bench.datasets.io.csv import CsvFile
from bench.datasets.io.diagnostics import collect_checked
from bench.datasets.io.parquet import ParquetFile
from bench.datasets.io.sequences import SequenceFile
from bench.errors import BenchError, ConfigError, DataError

Source = CsvFile | ParquetFile | SequenceFile


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


def _truthy(value: object, option: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(
        f"{value!r} is not true or false", option=option, hint=f"pass {option}=true|false"
    )


class SourceAdapter(Adapter):
    """An adapter whose raw files are `Source`s, so that bad input can be diagnosed.

    Subclasses implement `sources()` (the files actually read, required ones via
    `self.require`) and `scan()`; `option_help` lists the options they accept.
    """

    option_help: ClassVar[dict[str, str]] = {}

    def sources(self) -> list[Source]:
        raise NotImplementedError

    def check_options(self) -> None:
        for key, value in self.options.items():
            if value is not None and key not in self.option_help:
                takes = ", ".join(self.option_help) or "no options"
                raise ConfigError(
                    f"data set {self.name!r} has no option {key!r}",
                    option=key,
                    hint=f"{self.name} takes: {takes}",
                )

    def option(self, key: str, default: object = None) -> object:
        value = self.options.get(key)
        return default if value is None else value

    def flag(self, key: str, default: bool) -> bool:
        return _truthy(self.option(key, default), key)

    def diagnose(self) -> DataError | None:
        """The first problem in the raw files, as a DataError with file, line and column."""
        try:
            sources = self.sources()
        except BenchError as err:
            return err if isinstance(err, DataError) else None
        for source in sources:
            found = source.diagnose()
            if found is not None:
                return found
        return None

    def load(self, **collect_kwargs) -> pl.DataFrame:
        """The whole canonical frame, collected; bad input raises DataError."""
        return collect_checked(self.scan(), self, **collect_kwargs)

    def raw_files(self) -> list[Path]:
        try:
            return [s.path for s in self.sources()]
        except BenchError:
            return super().raw_files()
