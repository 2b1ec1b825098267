"""taobao-synth: a synthetic file in the exact Taobao UserBehavior format.

Written by `bench data synth taobao --rows N` (`bench.datasets.synth`) into
`<data_dir>/taobao-synth/UserBehavior.csv`, next to a SYNTHETIC.txt naming its seed and
sizes. Its own name and folder keep it apart from real Taobao data, and every artifact
built from it is marked synthetic. Read with the Taobao reader, under the Taobao window.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from bench.datasets.adapters.base import SourceAdapter
from bench.datasets.adapters.taobao import (
    FILE,
    TaobaoAdapter,
    scan_userbehavior,
    userbehavior_file,
)
from bench.datasets.io.csv import CsvFile
from bench.datasets.registry import register_dataset
from bench.errors import DataError


@register_dataset
class TaobaoSynthAdapter(SourceAdapter):
    name = "taobao-synth"
    description = "SYNTHETIC Taobao-format events with planted structure (smoke runs, scale)"
    files = (FILE,)
    homepage = "bench data synth taobao --rows N"
    default_protocol = "user-time"
    synthetic = True
    protocol_defaults = TaobaoAdapter.protocol_defaults  # the generator's default window

    def path(self) -> Path:
        """The generated file, or an error that says how to generate it."""
        path = self.root / FILE
        if not path.exists():
            raise DataError(
                f"no synthetic {FILE} for data set {self.name!r}",
                file=self.root,
                hint=f"generate one with `bench data synth taobao --rows N` (e.g. --rows 1000000), "
                f"which writes {path}; or point --data-dir / $BENCH_DATA_DIR at the folder "
                f"that holds {self.name}/",
            )
        return path

    def sources(self) -> list[CsvFile]:
        self.check_options()
        return [userbehavior_file(self.path())]

    def scan(self) -> pl.LazyFrame:
        self.check_options()
        return scan_userbehavior(self.path())
