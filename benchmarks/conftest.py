"""Shared data for the pytest-benchmark suite (`pytest benchmarks --benchmark-only`).

One torch thread and one Polars pool size for every figure, so that runs on one machine
compare; the synthetic Taobao file (1M rows) and its prepared artifact are made once per
session in a temp folder and shared by the benchmarks that read prepared data.
"""

from __future__ import annotations

import os

os.environ.setdefault("POLARS_MAX_THREADS", "1")  # before polars is imported anywhere
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROWS = 1_000_000


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """A data folder with taobao-synth/UserBehavior.csv of ROWS rows (seed 0)."""
    from bench.datasets.synth import write_taobao_synth

    root = tmp_path_factory.mktemp("data")
    write_taobao_synth(root / "taobao-synth" / "UserBehavior.csv", ROWS, seed=0)
    return root


@pytest.fixture(scope="session")
def synth_artifact(synth_data, tmp_path_factory) -> Path:
    """The `user-time` artifact of the synthetic file (its cache in a temp folder)."""
    from bench.datasets.prepare import prepare

    cache = tmp_path_factory.mktemp("cache")
    return prepare("taobao-synth", "user-time", data_dir=synth_data, cache_dir=cache)
